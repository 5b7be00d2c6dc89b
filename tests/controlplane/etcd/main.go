// Command etcd is etcd's server built from the go.etcd.io/etcd/server/v3 module, for the test
// control plane (see ../README.md). etcd's own main module (go.etcd.io/etcd/v3) is not published
// as a Go module, and server/v3 carries local replaces, so `go install` cannot build it: this
// wrapper does what etcd's main.go does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
