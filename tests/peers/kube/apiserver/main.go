// kube-apiserver for spectro's tests: the real API server from the k8s.io/kubernetes module,
// built here because no release binary may be downloaded. Same flags as kube-apiserver.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
