package contract_test

import (
	"reflect"
	"testing"

	"github.com/mrbacd/mrbacd/mistral/contract"
)

// fixture is a small OpenAPI document in the spec's style.
const fixture = `
openapi: 3.1.0
paths:
  /v1/things:
    get:
      parameters:
        - {name: limit, in: query, required: false, schema: {type: integer, default: 100}}
        - {name: x-trace, in: header, schema: {type: string}}
      responses:
        '200':
          description: OK
          content:
            application/json:
              schema: {$ref: '#/components/schemas/ThingsOUT'}
    post:
      requestBody:
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ThingIN'}
      responses:
        '204': {description: No Content}
components:
  schemas:
    ThingsOUT:
      type: object
      title: ThingsOUT
      description: prose that is dropped
      properties:
        things: {type: array, items: {$ref: '#/components/schemas/Thing'}}
      required: [things]
    Thing:
      type: object
      properties:
        id: {type: string, format: uuid, examples: [x]}
        when: {anyOf: [{type: string, format: date-time}, {type: 'null'}]}
        kind: {type: string, enum: [a, b]}
      required: [id, when]
    ThingIN:
      type: object
      additionalProperties: false
      properties:
        name: {anyOf: [{type: string, maxLength: 255}, {type: 'null'}]}
        amount: {type: integer, minimum: 0}
      required: [amount]
    Unused: {type: string}
`

func TestExtract(t *testing.T) {
	c, err := contract.Extract([]byte(fixture), []string{"GET /v1/things", "POST /v1/things"}, contract.Source{Commit: "abc"})
	if err != nil {
		t.Fatal(err)
	}
	get := c.Endpoints["GET /v1/things"]
	if get == nil || get.Query["limit"] == nil || get.Query["x-trace"] != nil || get.Responses["200"].JSON.Ref != "#/schemas/ThingsOUT" {
		t.Fatalf("GET = %+v", get)
	}
	if post := c.Endpoints["POST /v1/things"]; post.Request.Ref != "#/schemas/ThingIN" || post.Responses["204"].JSON != nil {
		t.Errorf("POST = %+v", post)
	}
	var names []string
	for n := range c.Schemas {
		names = append(names, n)
	}
	if len(names) != 3 || c.Schemas["Unused"] != nil {
		t.Errorf("schemas = %v, want the three reached", names)
	}
	in := c.Schemas["ThingIN"]
	if !in.Closed || !reflect.DeepEqual(in.Required, []string{"amount"}) || *in.Properties["name"].AnyOf[0].MaxLength != 255 || *in.Properties["amount"].Minimum != 0 {
		t.Errorf("ThingIN = %+v", in)
	}
	thing := c.Schemas["Thing"]
	if thing.Properties["id"].Format != "uuid" || len(thing.Properties["kind"].Enum) != 2 {
		t.Errorf("Thing = %+v", thing)
	}
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{name: "valid", body: `{"things": [{"id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "when": null, "kind": "a"}]}`, ok: true},
		{name: "nullable required present", body: `{"things": [{"id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "when": "2026-11-27T12:00:00Z"}]}`, ok: true},
		{name: "required missing", body: `{"things": [{"id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"}]}`, ok: false},
		{name: "bad enum", body: `{"things": [{"id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "when": null, "kind": "c"}]}`, ok: false},
		{name: "bad uuid", body: `{"things": [{"id": "nope", "when": null}]}`, ok: false},
		{name: "extra field, strict", body: `{"things": [], "more": 1}`, ok: false},
	}
	for _, tt := range tests {
		if errs := c.ValidateStrictJSON(get.Responses["200"].JSON, []byte(tt.body)); (len(errs) == 0) != tt.ok {
			t.Errorf("%s: problems %q, want ok=%v", tt.name, errs, tt.ok)
		}
	}
	if errs := c.ValidateJSON(c.Endpoints["POST /v1/things"].Request, []byte(`{"amount": 1.5, "x": 1}`)); len(errs) != 2 {
		t.Errorf("request problems = %q, want a non-integer and a closed object's extra field", errs)
	}
	if _, err := contract.Extract([]byte(fixture), []string{"GET /v1/nothing"}, contract.Source{}); err == nil {
		t.Error("an endpoint missing from the spec was accepted")
	}
}
