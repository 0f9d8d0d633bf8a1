// vcsim for spectro's tests: govmomi's vCenter simulator (simulator.VPX()) served with TLS on
// 127.0.0.1 and a free port. Prints the SDK URL on stdout, then serves until killed.
// -clone-delay MS makes every clone task take that long (crash tests kill a client mid-clone).
// -deny 'USER=PRIV,PRIV;USER2=PRIV' makes HasPrivilegeOnEntities answer "not granted" for
// those privileges of those users on every entity (stock vcsim grants everything to
// everyone), so pre-checks can be tested against the real wire call.
// Build: scripts/vcsim --build-only (a Go module: go.mod + go.sum pin govmomi).
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// authz answers HasPrivilegeOnEntities from the -deny table; everything else is vcsim's.
type authz struct {
	*simulator.AuthorizationManager
	deny map[string]map[string]bool
}

func (a *authz) HasPrivilegeOnEntities(ctx *simulator.Context, req *types.HasPrivilegeOnEntities) soap.HasFault {
	denied := a.deny[ctx.Session.UserName]
	var res []types.EntityPrivilege
	for _, e := range req.Entity {
		ep := types.EntityPrivilege{Entity: e}
		for _, id := range req.PrivId {
			ep.PrivAvailability = append(ep.PrivAvailability, types.PrivilegeAvailability{PrivId: id, IsGranted: !denied[id]})
		}
		res = append(res, ep)
	}
	return &methods.HasPrivilegeOnEntitiesBody{Res: &types.HasPrivilegeOnEntitiesResponse{Returnval: res}}
}

func parseDeny(s string) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, part := range strings.Split(s, ";") {
		user, privs, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		out[user] = map[string]bool{}
		for _, p := range strings.Split(privs, ",") {
			out[user][strings.TrimSpace(p)] = true
		}
	}
	return out
}

func main() {
	clusters := flag.Int("cluster", 1, "compute clusters per datacenter")
	pools := flag.Int("pool", 0, "child resource pools per cluster")
	cloneDelay := flag.Int("clone-delay", 0, "milliseconds every CloneVM_Task runs before it completes")
	deny := flag.String("deny", "", "USER=PRIV,PRIV;...: privileges HasPrivilegeOnEntities reports as not granted")
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
	if *deny != "" {
		r := model.Map()
		am := r.Get(types.ManagedObjectReference{Type: "AuthorizationManager", Value: "AuthorizationManager"}).(*simulator.AuthorizationManager)
		r.Put(&authz{AuthorizationManager: am, deny: parseDeny(*deny)})
	}
	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0"}
	s := model.Service.NewServer()
	fmt.Println(s.URL.String())
	select {}
}
