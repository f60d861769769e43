//go:build tools

// Package internal pins modules that parts of the tree use before every part has landed.
package internal

import (
	_ "github.com/duckdb/duckdb-go/v2"
	_ "github.com/eclipse/paho.mqtt.golang"
	_ "github.com/influxdata/line-protocol/v2/lineprotocol"
	_ "github.com/mochi-mqtt/server/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.uber.org/goleak"
	_ "gopkg.in/yaml.v3"
)
