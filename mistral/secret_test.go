package mistral

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestSecretRedacts(t *testing.T) {
	const plain = "sk-Plaintext0123456789abcdefghijkl"
	s := Secret(plain)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "key", s, "k", Key{Key: s})
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "key", s)
	js, err := json.Marshal(Key{KeyID: "id", Key: s})
	if err != nil {
		t.Fatal(err)
	}
	outputs := []string{
		fmt.Sprint(s), fmt.Sprintf("%s %v %q %x %X %d %#v %+v", s, s, s, s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", Key{Key: s}, Key{Key: s}, Key{Key: s}), s.String(), s.GoString(),
		logs.String(), string(js),
	}
	for i, o := range outputs {
		if strings.Contains(o, plain) || strings.Contains(o, "Plaintext") {
			t.Errorf("output %d leaks the secret: %s", i, o)
		}
		if !strings.Contains(o, Redacted) {
			t.Errorf("output %d lacks %s: %s", i, Redacted, o)
		}
	}
	if s.Reveal() != plain {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
	if Secret("").String() != "" || !Secret("").IsZero() {
		t.Errorf("empty secret should print empty")
	}
	var k Key
	if err := json.Unmarshal([]byte(`{"key": "`+plain+`"}`), &k); err != nil || k.Key.Reveal() != plain {
		t.Fatalf("unmarshal key: %v %q", err, k.Key.Reveal())
	}
	if err := json.Unmarshal([]byte(`{"key": null}`), &k); err != nil || !k.Key.IsZero() {
		t.Fatalf("unmarshal null key: %v", err)
	}
}

func TestDate(t *testing.T) {
	tests := []struct {
		in      string
		want    Date
		wantErr bool
	}{
		{in: "2026-11-27", want: Date{2026, 11, 27}, wantErr: false},
		{in: "2026-11-27T23:59:59Z", want: Date{2026, 11, 27}, wantErr: false},
		{in: "2026-11-27T10:00:00.123456", want: Date{2026, 11, 27}, wantErr: false},
		{in: "27/11/2026", want: Date{}, wantErr: true},
		{in: "", want: Date{}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseDate(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseDate(%q) = %v, %v", tt.in, got, err)
		}
	}
	var p struct {
		D *Date `json:"d"`
	}
	if err := json.Unmarshal([]byte(`{"d": null}`), &p); err != nil || p.D != nil {
		t.Fatalf("null date: %v %v", err, p.D)
	}
	if err := json.Unmarshal([]byte(`{"d": "2027-01-02"}`), &p); err != nil || *p.D != (Date{2027, 1, 2}) {
		t.Fatalf("date: %v %v", err, p.D)
	}
	if err := json.Unmarshal([]byte(`{"d": 5}`), &p); err == nil {
		t.Fatal("numeric date accepted")
	}
	b, _ := json.Marshal(Date{2027, 1, 2})
	if string(b) != `"2027-01-02"` {
		t.Errorf("marshal = %s", b)
	}
	d := Date{2026, 12, 31}
	if d.AddDays(1) != (Date{2027, 1, 1}) || !d.Before(Date{2027, 1, 1}) || !d.After(Date{2026, 1, 1}) || d.Compare(d) != 0 {
		t.Error("date arithmetic")
	}
	if DateOf(time.Date(2026, 3, 4, 23, 0, 0, 0, time.UTC)) != (Date{2026, 3, 4}) {
		t.Error("DateOf")
	}
	k := Key{ExpirationDate: &Date{2026, 11, 27}}
	if k.Expired(Date{2026, 11, 27}) || !k.Expired(Date{2026, 11, 28}) || (Key{}).Expired(Date{3000, 1, 1}) {
		t.Error("Key.Expired")
	}
}

func TestKeyUnmarshalTolerant(t *testing.T) {
	tests := []struct {
		name, body string
		created    time.Time
		createdBy  string
	}{
		{name: "rfc3339", body: `{"key_id":"a","created_at":"2026-08-01T12:00:00.123456Z","created_by":"u1"}`, created: time.Date(2026, 8, 1, 12, 0, 0, 123456000, time.UTC), createdBy: "u1"},
		{name: "no zone", body: `{"key_id":"a","created_at":"2026-08-01T12:00:00","created_by":{"id":"u1"}}`, created: time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC), createdBy: `{"id":"u1"}`},
		{name: "null", body: `{"key_id":"a","created_at":null,"created_by":null}`, created: time.Time{}, createdBy: ""},
	}
	for _, tt := range tests {
		var k Key
		if err := json.Unmarshal([]byte(tt.body), &k); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !k.CreatedAt.Equal(tt.created) || k.CreatedBy != tt.createdBy || k.KeyID != "a" {
			t.Errorf("%s: got %v %q", tt.name, k.CreatedAt, k.CreatedBy)
		}
	}
}
