package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/fpagent/fpagent/internal/config"
	"github.com/fpagent/fpagent/internal/outputs"
	"github.com/fpagent/fpagent/internal/outputs/influx"
	"github.com/fpagent/fpagent/internal/outputs/mqttout"
	"github.com/fpagent/fpagent/internal/tlsconf"
	"github.com/fpagent/fpagent/internal/version"
	"github.com/fpagent/fpagent/storage"
)

// feedConfigs declares one WAL feed per output, so that storage keeps every
// segment an output has not forwarded, from the moment it opens.
func feedConfigs(cfg *config.Config) []storage.FeedConfig {
	var out []storage.FeedConfig
	add := func(q config.OutputQueue) {
		out = append(out, storage.FeedConfig{Name: q.Name, DiskBudget: int64(q.DiskBudget), Policy: storage.FeedPolicy(q.OnFull)})
	}
	for _, o := range cfg.Outputs.Influx {
		add(o.OutputQueue)
	}
	for _, o := range cfg.Outputs.MQTT {
		add(o.OutputQueue)
	}
	return out
}

// buildOutputs constructs the configured outputs on the open store.
func buildOutputs(cfg *config.Config, store *storage.Store, log *slog.Logger) ([]*outputs.Forwarder, error) {
	var fwds []*outputs.Forwarder
	add := func(typ string, q config.OutputQueue, s outputs.Sender) error {
		feed, err := store.Feed(q.Name)
		if err != nil {
			return err
		}
		fwds = append(fwds, outputs.New(outputs.Config{
			Name: q.Name, Type: typ, Feed: feed, Sender: s, DeadLetter: store.DeadLetter,
			BatchSize: q.BatchSize, RetryMin: q.RetryMin.D(), RetryMax: q.RetryMax.D(),
			Logger: log.With("component", "output"),
		}))
		return nil
	}
	for i, o := range cfg.Outputs.Influx {
		key := fmt.Sprintf("outputs.influx[%d]", i)
		var tc = clientTLS(o.TLS)
		ic := influx.Config{
			URL: o.URL, API: o.API, Database: o.Database, RetentionPolicy: o.RetentionPolicy,
			Org: o.Org, Bucket: o.Bucket, Token: o.Token, Username: o.Username, Password: o.Password,
			Gzip: o.Gzip, Timeout: o.Timeout.D(), UserAgent: "fpagent/" + version.Get().Version,
		}
		if tc.Set() {
			t, err := tc.Config()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
			ic.TLS = t
		}
		s, err := influx.New(ic)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if err := add("influx", o.OutputQueue, s); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	for i, o := range cfg.Outputs.MQTT {
		key := fmt.Sprintf("outputs.mqtt[%d]", i)
		id := o.ClientID
		if id == "" {
			host, _ := os.Hostname()
			id = fmt.Sprintf("fpagent-%s-%s", orDefault(host, "edge"), o.Name)
		}
		s, err := mqttout.New(mqttout.Config{
			Brokers: o.Brokers, ClientID: id, Username: o.Username, Password: o.Password, TLS: clientTLS(o.TLS),
			Topic: o.Topic, Format: o.Format, QoS: byte(o.QoS), Retain: o.Retain, MaxLines: o.MaxLines,
			Timeout: o.Timeout.D(), ConnectTimeout: o.ConnectTimeout.D(), Keepalive: o.Keepalive.D(),
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if err := add("mqtt", o.OutputQueue, s); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	return fwds, nil
}

func clientTLS(t config.ClientTLS) tlsconf.Client {
	return tlsconf.Client{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

// outputStats is the "outputs" section of /stats.
func outputStats(fwds []*outputs.Forwarder) any {
	m := make(map[string]outputs.Stats, len(fwds))
	for _, f := range fwds {
		m[f.Name()] = f.Stats()
	}
	return m
}

// exportDaily exports yesterday (UTC) once its file is missing and the day
// is over by five minutes; it checks every minute until stop closes.
func exportDaily(store *storage.Store, dir string, log *slog.Logger, stop <-chan struct{}) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if day, due := exportDue(dir, time.Now()); due {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			if _, err := store.Export(ctx, day, day); err != nil {
				log.Error("daily Parquet export failed; retried in a minute", "day", day.Format(time.DateOnly), "err", err)
			}
			cancel()
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// exportDue says whether the day before now (UTC) is still to be exported:
// its file is missing and the day is over by five minutes, a grace for
// points of that day still on their way.
func exportDue(dir string, now time.Time) (day time.Time, due bool) {
	today := now.UTC().Truncate(24 * time.Hour)
	day = today.AddDate(0, 0, -1)
	if now.Sub(today) < 5*time.Minute {
		return day, false
	}
	_, err := os.Stat(storage.ExportFile(dir, day))
	return day, errors.Is(err, fs.ErrNotExist)
}
