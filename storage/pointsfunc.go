package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"

	duckdb "github.com/duckdb/duckdb-go/v2"
)

// pointsFunc is the table function a flush inserts its points through:
//
//	INSERT INTO points SELECT make_timestamp_ns(ts), series_id, fields FROM fpagent_flush_points(<token>)
//
// DuckDB pulls the rows a vector of 2048 at a time, and each value is
// written straight into the vector: the Appender boxes every value into a
// driver.Value and converts every timestamp through time.Time, which cost
// more than a third of the flush's time in DuckDB's driver. DuckDB inserts
// the rows as it does any INSERT … SELECT, whole row groups written straight
// to the database file.
//
// The function is in the database's catalog, where any connection could
// name it; it hands out the batch only to a caller that knows the token,
// which is random and never leaves the process, and only while the
// flusher's writer has a batch set.
type pointsFunc struct {
	name   string
	token  int64
	insert string // the statement above

	mu sync.Mutex // orders the writer's set/clear with DuckDB's threads reading
	fb *flushBatch
}

func registerPointsFunc(ctx context.Context, db *sql.DB) (*pointsFunc, error) {
	pf := &pointsFunc{name: "fpagent_flush_points", token: rand.Int64()}
	// Not prepared: DuckDB binds a table function when it plans the statement.
	pf.insert = fmt.Sprintf(`INSERT INTO points SELECT make_timestamp_ns(ts), series_id, fields FROM %s(%d)`, pf.name, pf.token)
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	bigint, err := duckdb.NewTypeInfo(duckdb.TYPE_BIGINT)
	if err != nil {
		return nil, err
	}
	err = duckdb.RegisterTableUDF(conn, pf.name, duckdb.ChunkTableFunction{
		Config:        duckdb.TableFunctionConfig{Arguments: []duckdb.TypeInfo{bigint}},
		BindArguments: pf.bind,
	})
	if err != nil {
		return nil, fmt.Errorf("register the flush's table function: %w", err)
	}
	return pf, nil
}

// set makes fb the batch the function returns, until set(nil).
func (pf *pointsFunc) set(fb *flushBatch) {
	pf.mu.Lock()
	pf.fb = fb
	pf.mu.Unlock()
}

func (pf *pointsFunc) bind(_ map[string]any, args ...any) (duckdb.ChunkTableSource, error) {
	if len(args) != 1 {
		return nil, errors.New("fpagent_flush_points takes one argument")
	}
	token, _ := args[0].(int64)
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if token != pf.token || pf.fb == nil {
		return nil, errors.New("fpagent_flush_points is the flusher's own and cannot be queried")
	}
	return &pointsSource{pf: pf, fb: pf.fb}, nil
}

// pointsSource is one scan of a batch's live rows.
type pointsSource struct {
	pf   *pointsFunc
	fb   *flushBatch
	next int // index into fb.rows
}

var pointsColumns = func() []duckdb.ColumnInfo {
	cols := []struct {
		name string
		t    duckdb.Type
	}{{"ts", duckdb.TYPE_BIGINT}, {"series_id", duckdb.TYPE_UINTEGER}, {"fields", duckdb.TYPE_VARCHAR}}
	infos := make([]duckdb.ColumnInfo, len(cols))
	for i, c := range cols {
		t, err := duckdb.NewTypeInfo(c.t)
		if err != nil {
			panic(err) // a primitive type: cannot fail
		}
		infos[i] = duckdb.ColumnInfo{Name: c.name, T: t}
	}
	return infos
}()

func (ps *pointsSource) ColumnInfos() []duckdb.ColumnInfo { return pointsColumns }

func (ps *pointsSource) Cardinality() *duckdb.CardinalityInfo {
	return &duckdb.CardinalityInfo{Cardinality: uint(len(ps.fb.rows))}
}

func (ps *pointsSource) Init() {}

// FillChunk runs on one of DuckDB's threads while the writer waits for its
// statement; the lock orders what it reads after what the writer built.
func (ps *pointsSource) FillChunk(c duckdb.DataChunk) error {
	ps.pf.mu.Lock()
	defer ps.pf.mu.Unlock()
	if ps.pf.fb != ps.fb {
		return errors.New("the flush batch changed during its insert")
	}
	fb, n, capacity := ps.fb, 0, duckdb.GetDataChunkCapacity()
	for ; ps.next < len(fb.rows) && n < capacity; ps.next++ {
		r := &fb.rows[ps.next]
		if r.dead {
			continue
		}
		if err := duckdb.SetChunkValue(c, 0, n, r.ts); err != nil {
			return err
		}
		if err := duckdb.SetChunkValue(c, 1, n, r.series); err != nil {
			return err
		}
		if err := duckdb.SetChunkValue(c, 2, n, fb.arena[r.fields.off:r.fields.end]); err != nil {
			return err
		}
		n++
	}
	return c.SetSize(n)
}
