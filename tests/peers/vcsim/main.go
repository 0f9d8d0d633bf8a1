// vcsim for spectro's tests: govmomi's vCenter simulator (simulator.VPX()) served with TLS on
// 127.0.0.1 and a free port. Prints the SDK URL on stdout, then serves until killed.
// -clone-delay MS makes every clone task take that long (crash tests kill a client mid-clone).
// Build: scripts/vcsim --build-only (a Go module: go.mod + go.sum pin govmomi).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	clusters := flag.Int("cluster", 1, "compute clusters per datacenter")
	pools := flag.Int("pool", 0, "child resource pools per cluster")
	cloneDelay := flag.Int("clone-delay", 0, "milliseconds every CloneVM_Task runs before it completes")
	flag.Parse()
	if *cloneDelay > 0 {
		// The task runs after the delay; the source VM stays readable meanwhile (no lock
		// hand-off), so other clones and reads go on.
		simulator.TaskDelay.MethodDelay = map[string]int{"CloneVm": *cloneDelay, "LockHandoff": 0}
	}
	model := simulator.VPX()
	model.Cluster, model.Pool = *clusters, *pools
	defer model.Remove()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	s := model.Service.NewServer()
	fmt.Println(s.URL.String())
	select {}
}
