package api

import "testing"

func TestRequiredRole(t *testing.T) {
	for proc, want := range map[string]string{
		"/crossdock.admin.v1.AdminService/ListAgents":               "viewer",
		"/crossdock.admin.v1.AdminService/TailEvents":               "viewer",
		"/crossdock.routing.v1.RoutingService/TestRoute":            "viewer",
		"/crossdock.admin.v1.AccessService/ListAudit":               "viewer",
		"/crossdock.routing.v1.RoutingService/ApplyDocuments":       "operator",
		"/crossdock.delivery.v1.DeliveryService/RetryDeadLetters":   "operator",
		"/crossdock.delivery.v1.DeliveryService/StartReplay":        "operator",
		"/crossdock.admin.v1.AdminService/ReplayArchive":            "operator",
		"/crossdock.admin.v1.AdminService/CreateToken":              "admin",
		"/crossdock.admin.v1.AdminService/RestoreSnapshot":          "admin",
		"/crossdock.admin.v1.AdminService/SaveSnapshot":             "admin",
		"/crossdock.admin.v1.AdminService/RemovePeer":               "admin",
		"/crossdock.admin.v1.AdminService/RevokeAgent":              "admin",
		"/crossdock.partner.v1.PartnerAdminService/CreateKey":       "admin",
		"/crossdock.admin.v1.AccessService/CreateCredential":        "admin",
		"/crossdock.admin.v1.SomeFutureService/DoSomethingMutating": "admin",
		"/crossdock.admin.v1.FleetService/PushRelease":              "admin",
		"/crossdock.admin.v1.FleetService/StartUpgrade":             "admin",
		"/crossdock.admin.v1.FleetService/ListReleases":             "viewer",
		"/crossdock.admin.v1.FleetService/GetUpgrade":               "viewer",
	} {
		if got := RequiredRole(proc); got != want {
			t.Errorf("RequiredRole(%s) = %s, want %s", proc, got, want)
		}
	}
}
