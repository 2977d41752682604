// Command etcd wraps etcdmain so the e2e harness can build an etcd new enough
// for Kubernetes 1.37 from Go modules (the server module itself cannot be
// installed with `go install`: it carries replace directives).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
