// etcd for spectro's tests: the real etcd server from go.etcd.io/etcd/server/v3 (the version
// k8s.io/kubernetes pins). Same flags as etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
