package redisbroker

import (
	"fmt"
	"os"
	"testing"

	"github.com/herald-rt/herald/internal/broker"
	"github.com/herald-rt/herald/internal/broker/brokertest"
	"github.com/herald-rt/herald/internal/redistest"
)

var srv *redistest.Server

func TestMain(m *testing.M) {
	var err error
	if srv, err = redistest.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	srv.Stop()
	os.Exit(code)
}

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, deliver broker.DeliverFunc) broker.Broker {
		return start(t, Options{Prefix: srv.Prefix(), Deliver: deliver})
	})
}
