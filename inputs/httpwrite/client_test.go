package httpwrite

import (
	"context"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
)

// TestOfficialClient writes with the official InfluxDB Go client (blocking
// write API) and reads the stored records back: every field type, escapes
// and the time as sent.
func TestOfficialClient(t *testing.T) {
	f := newFixture(t, Options{Token: "tok"})
	client := influxdb2.NewClientWithOptions(f.url, "tok", influxdb2.DefaultOptions().SetPrecision(time.Microsecond))
	defer client.Close()
	ctx := context.Background()
	if ok, err := client.Ping(ctx); !ok || err != nil {
		t.Fatalf("Ping = %v, %v", ok, err)
	}
	if h, err := client.Health(ctx); err != nil || h.Status != "pass" {
		t.Fatalf("Health = %+v, %v", h, err)
	}
	w := client.WriteAPIBlocking("org", "sensors")
	at := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	p := influxdb2.NewPoint("weather",
		map[string]string{"station": "north gate", "city": "Zürich,CH"},
		map[string]any{"temp": 21.5, "count": int64(-3), "seq": uint64(18446744073709551615), "ok": true, "note": `say "hi" \ bye`},
		at)
	if err := w.WritePoint(ctx, p); err != nil {
		t.Fatalf("WritePoint: %v", err)
	}
	if err := w.WriteRecord(ctx, "weather,station=south temp=19 1714979289123456"); err != nil {
		t.Fatalf("WriteRecord: %v", err)
	}
	points := f.sink.Points()
	if len(points) != 2 {
		t.Fatalf("stored %d points, want 2", len(points))
	}
	got := string(points[0].AppendJSON(nil))
	want := `{"measurement":"weather","tags":{"city":"Zürich,CH","db":"sensors","station":"north gate"},` +
		`"fields":{"count":-3,"note":"say \"hi\" \\ bye","ok":true,"seq":18446744073709551615,"temp":21.5},"time":"2024-05-06T07:08:09.123456Z"}`
	if got != want {
		t.Errorf("stored\n%s\nwant\n%s", got, want)
	}
	if points[1].Key != "weather,db=sensors,station=south" || points[1].Time != 1714979289123456000 {
		t.Errorf("second point %+v", points[1])
	}
	// A bad line comes back to the client as an error naming it.
	err := w.WriteRecord(ctx, "weather temp=1", "weather temp=", "weather temp=2")
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("partial write error = %v, want one naming line 2", err)
	}
	if n := len(f.sink.Points()); n != 4 {
		t.Errorf("stored %d points after the partial write, want 4", n)
	}
	bad := influxdb2.NewClient(f.url, "wrong")
	defer bad.Close()
	if err := bad.WriteAPIBlocking("org", "b").WriteRecord(ctx, "m v=1"); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("write with a wrong token = %v", err)
	}
	f.settled()
}
