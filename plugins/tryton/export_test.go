package tryton

import "context"

// EndSessionForTest logs the connector's session out in Tryton, as an expired session
// would be, while the connector still holds it (fault injection for the re-login test).
func (c *Connector) EndSessionForTest(ctx context.Context) error {
	c.rpc.mu.Lock()
	session := c.rpc.session
	c.rpc.mu.Unlock()
	_, err := c.rpc.post(ctx, session, "common.db.logout", []any{})
	return err
}
