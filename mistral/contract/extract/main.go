// Command extract writes the contract of the endpoints mrbacd uses from
// Mistral's published OpenAPI spec:
//
//	git -C platform-docs-public show HEAD:public/openapi.yaml > /tmp/openapi.yaml
//	go run ./mistral/contract/extract -spec /tmp/openapi.yaml -commit <sha> -date <YYYY-MM-DD> \
//	    > mistral/contract/testdata/contract.json
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/mrbacd/mrbacd/mistral/contract"
)

func main() {
	spec := flag.String("spec", "", "path of public/openapi.yaml")
	commit := flag.String("commit", "", "commit of the spec")
	date := flag.String("date", "", "date of that commit (YYYY-MM-DD)")
	flag.Parse()
	if *spec == "" || *commit == "" || *date == "" {
		fmt.Fprintln(os.Stderr, "usage: extract -spec FILE -commit SHA -date YYYY-MM-DD > contract.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(*spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "extract:", err)
		os.Exit(1)
	}
	c, err := contract.Extract(data, contract.Endpoints, contract.Source{
		Repository: "mistralai/platform-docs-public", Path: "public/openapi.yaml", Commit: *commit, Date: *date})
	if err != nil {
		fmt.Fprintln(os.Stderr, "extract:", err)
		os.Exit(1)
	}
	out, err := json.MarshalIndent(c, "", " ")
	if err != nil {
		fmt.Fprintln(os.Stderr, "extract:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\n", out)
}
