// Command etcd runs etcd's own server main. etcd's server module carries replace directives,
// which `go install` refuses; this wrapper module requires its published releases instead.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
