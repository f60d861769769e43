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
//	INSERT INTO points_json SELECT make_timestamp_ns(ts), series_id, fields FROM fpagent_flush_points(<token>, 0)
//	INSERT INTO points_f3 SELECT make_timestamp_ns(ts), series_id, f1, f2, f3 FROM fpagent_flush_points(<token>, 3)
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
	insert [maxFloatFields + 1]string // the statements above, by width

	mu sync.Mutex // orders the writer's set/clear with DuckDB's threads reading
	fb *flushBatch
}

func registerPointsFunc(ctx context.Context, db *sql.DB) (*pointsFunc, error) {
	pf := &pointsFunc{name: "fpagent_flush_points", token: rand.Int64()}
	// Not prepared: DuckDB binds a table function when it plans the statement.
	pf.insert[0] = fmt.Sprintf(`INSERT INTO points_json SELECT make_timestamp_ns(ts), series_id, fields FROM %s(%d, 0)`, pf.name, pf.token)
	for w := 1; w <= maxFloatFields; w++ {
		cols := ""
		for i := 1; i <= w; i++ {
			cols += fmt.Sprintf(", f%d", i)
		}
		pf.insert[w] = fmt.Sprintf(`INSERT INTO %s SELECT make_timestamp_ns(ts), series_id%s FROM %s(%d, %d)`, floatTable(w), cols, pf.name, pf.token, w)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	bigint, err := duckdb.NewTypeInfo(duckdb.TYPE_BIGINT)
	if err != nil {
		return nil, err
	}
	integer, err := duckdb.NewTypeInfo(duckdb.TYPE_INTEGER)
	if err != nil {
		return nil, err
	}
	err = duckdb.RegisterTableUDF(conn, pf.name, duckdb.ChunkTableFunction{
		Config:        duckdb.TableFunctionConfig{Arguments: []duckdb.TypeInfo{bigint, integer}},
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
	if len(args) != 2 {
		return nil, errors.New("fpagent_flush_points takes two arguments")
	}
	token, _ := args[0].(int64)
	width, _ := args[1].(int32)
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if token != pf.token || pf.fb == nil {
		return nil, errors.New("fpagent_flush_points is the flusher's own and cannot be queried")
	}
	if width < 0 || width > maxFloatFields {
		return nil, fmt.Errorf("fpagent_flush_points: width %d is out of range", width)
	}
	return &pointsSource{pf: pf, fb: pf.fb, width: uint8(width)}, nil
}

// pointsSource is one scan of a batch's live rows.
type pointsSource struct {
	pf    *pointsFunc
	fb    *flushBatch
	width uint8 // the rows it returns: those of this width
	next  int   // index into fb.rows
}

// pointsColumns are the function's columns by width: ts, series_id, and
// fields (JSON text) for width 0, f1 … f<width> (DOUBLE) for the others.
var pointsColumns = func() (byWidth [maxFloatFields + 1][]duckdb.ColumnInfo) {
	info := func(name string, t duckdb.Type) duckdb.ColumnInfo {
		ti, err := duckdb.NewTypeInfo(t)
		if err != nil {
			panic(err) // a primitive type: cannot fail
		}
		return duckdb.ColumnInfo{Name: name, T: ti}
	}
	base := []duckdb.ColumnInfo{info("ts", duckdb.TYPE_BIGINT), info("series_id", duckdb.TYPE_UINTEGER)}
	byWidth[0] = append(base[:2:2], info("fields", duckdb.TYPE_VARCHAR))
	for w := 1; w <= maxFloatFields; w++ {
		byWidth[w] = base[:2:2]
		for i := 1; i <= w; i++ {
			byWidth[w] = append(byWidth[w], info(fmt.Sprintf("f%d", i), duckdb.TYPE_DOUBLE))
		}
	}
	return byWidth
}()

func (ps *pointsSource) ColumnInfos() []duckdb.ColumnInfo { return pointsColumns[ps.width] }

func (ps *pointsSource) Cardinality() *duckdb.CardinalityInfo {
	return &duckdb.CardinalityInfo{Cardinality: uint(ps.fb.widths[ps.width])}
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
		if r.dead || r.width != ps.width {
			continue
		}
		if err := duckdb.SetChunkValue(c, 0, n, r.ts); err != nil {
			return err
		}
		if err := duckdb.SetChunkValue(c, 1, n, r.series); err != nil {
			return err
		}
		if r.width == 0 {
			if err := duckdb.SetChunkValue(c, 2, n, fb.arena[r.fields.off:r.fields.end]); err != nil {
				return err
			}
		} else {
			for i, v := range fb.floats[r.fields.off:r.fields.end] {
				if err := duckdb.SetChunkValue(c, 2+i, n, v); err != nil {
					return err
				}
			}
		}
		n++
	}
	return c.SetSize(n)
}
