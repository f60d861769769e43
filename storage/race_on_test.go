//go:build race

package storage

// raceEnabled scales the heavy tests down under the race detector, which
// makes them several times slower and distorts heap figures.
const raceEnabled = true
