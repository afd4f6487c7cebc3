package bench

// fanout: every connection subscribes to one channel, which is published to
// on a schedule.
func init() {
	register(&scenario{
		name: "fanout",
		usage: `--conns subscribers of one channel; publish --rate/s of --payload bytes for
            --duration through POST /api/publish (--api-key) or --publish-via ws`,
		publishes:  true,
		measure:    measurePublishing,
		serverCost: perDeliveryCost,
	})
}
