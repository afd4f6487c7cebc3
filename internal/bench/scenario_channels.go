package bench

// channels: connections subscribe in groups of --group-size (plus their own
// user channel), and the groups are published to on a schedule. The fleets
// lay the groups out (fleetSpec.channelsOf); Config.streams counts them.
func init() {
	register(&scenario{
		name: "channels",
		usage: `each connection subscribes to user:{id} and to a group:K channel shared by
            --group-size connections; publish to the groups at --rate/s`,
		publishes:  true,
		grouped:    true,
		measure:    measurePublishing,
		serverCost: perDeliveryCost,
	})
}
