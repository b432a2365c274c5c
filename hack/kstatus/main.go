// kstatus reads Kubernetes objects as JSON (one object, or a List) on stdin and prints, one JSON
// line per object, what sigs.k8s.io/cli-utils' kstatus computes for it: the status Flux's
// `--wait`, `kubectl wait`-style pollers and kpt read (InProgress, Current, Failed, ...).
//
// Built by hack/build-kstatus.sh from the Go module proxy; tests call it offline.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(data); err != nil {
		fail(err)
	}
	items := []unstructured.Unstructured{obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			fail(err)
		}
		items = list.Items
	}
	out := json.NewEncoder(os.Stdout)
	for i := range items {
		res, err := status.Compute(&items[i])
		if err != nil {
			fail(err)
		}
		_ = out.Encode(result{items[i].GetKind(), items[i].GetName(), res.Status.String(), res.Message})
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
