package redisbroker

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

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

// Describe names the Redis and the prefix for the startup log, never the
// password.
func TestDescribeHidesThePassword(t *testing.T) {
	o, err := redis.ParseURL("redis://:s3cret-pw@10.0.0.1:6380/2")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(New(Options{Redis: o, Prefix: "p"}).Describe()...)
	if !strings.Contains(got, "10.0.0.1:6380") || !strings.Contains(got, "p") || strings.Contains(got, "s3cret") {
		t.Errorf("Describe() = %s", got)
	}
}
