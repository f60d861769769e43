package main

import (
	"strings"
	"testing"
)

// These need no root, no tools and no build.

func TestOptionsComplete(t *testing.T) {
	base := func() options {
		return options{Version: "1.2.3", Release: "1", Archs: []string{"amd64", "arm64"}, Formats: []string{"deb", "rpm"},
			Root: t.TempDir(), Commit: "abc", Date: "2026-01-02T03:04:05Z", Compression: "xz"}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*options)
		wantErr string
		deb     string
	}{
		{"release", func(*options) {}, "", "1.2.3-1"},
		{"v prefix", func(o *options) { o.Version = "v1.2.3" }, "", "1.2.3-1"},
		{"pre-release sorts first", func(o *options) { o.Version = "1.3.0-rc1" }, "", "1.3.0~rc1-1"},
		{"revision", func(o *options) { o.Release = "2" }, "", "1.2.3-2"},
		{"no version", func(o *options) { o.Version = "" }, "-version is required", ""},
		{"letters first", func(o *options) { o.Version = "latest" }, `-version "latest"`, ""},
		{"two dashes", func(o *options) { o.Version = "1.0-a-b" }, `-version "1.0-a-b"`, ""},
		{"space", func(o *options) { o.Version = "1.0 beta" }, `-version "1.0 beta"`, ""},
		{"bad release", func(o *options) { o.Release = "1-2" }, `-release "1-2"`, ""},
		{"bad arch", func(o *options) { o.Archs = []string{"386"} }, `-arch "386"`, ""},
		{"bad format", func(o *options) { o.Formats = []string{"apk"} }, `-formats "apk"`, ""},
		{"bad compression", func(o *options) { o.Compression = "bzip2" }, `-compression "bzip2"`, ""},
		{"bad date", func(o *options) { o.Date = "yesterday" }, `-date "yesterday"`, ""},
		{"no archs", func(o *options) { o.Archs = nil }, "at least one value", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base()
			tc.edit(&o)
			err := o.complete()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("complete() = %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := o.debVersion(); got != tc.deb {
				t.Errorf("debVersion() = %q, want %q", got, tc.deb)
			}
		})
	}
}

func TestProductionConfig(t *testing.T) {
	got, err := productionConfig([]byte("# header\ndata_dir: ./fpagent-data\nlog:\n  level: info\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "\ndata_dir: /var/lib/fpagent\nlog:\n  level: info\n") || strings.Contains(string(got), "./fpagent-data") {
		t.Errorf("productionConfig:\n%s", got)
	}
	for _, bad := range []string{"log: {}\n", "data_dir: ./fpagent-data\ndata_dir: ./fpagent-data\n", "data_dir: /srv\n"} {
		if _, err := productionConfig([]byte(bad)); err == nil {
			t.Errorf("productionConfig(%q) = nil error, want one naming the data_dir line", bad)
		}
	}
}

func TestMinVersion(t *testing.T) {
	for _, tc := range []struct {
		prefix  string
		v       []int
		want    string
		wantErr bool
	}{
		{"GLIBC_", []int{2, 34}, "2.34", false},
		{"GLIBC_", nil, "", false},
		{"GLIBCXX_", []int{3, 4, 30}, "12", false},
		{"GLIBCXX_", []int{3, 4, 32}, "13.2", false},
		{"GLIBCXX_", []int{3, 4, 9}, "5", false},
		{"GLIBCXX_", []int{3, 4, 99}, "", true},
		{"GLIBCXX_", []int{4, 0}, "", true},
	} {
		got, err := minVersion(tc.prefix, tc.v)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("minVersion(%s, %v) = %q, %v; want %q, error %v", tc.prefix, tc.v, got, err, tc.want, tc.wantErr)
		}
	}
	if !lessDotted([]int{2, 9}, []int{2, 34}) || lessDotted([]int{2, 34}, []int{2, 34}) || !lessDotted([]int{3, 4}, []int{3, 4, 1}) {
		t.Error("lessDotted orders versions wrongly")
	}
}

func TestFindRoot(t *testing.T) {
	if _, err := findRoot(t.TempDir()); err == nil || !strings.Contains(err.Error(), "pass -root") {
		t.Errorf("findRoot outside the repository = %v, want an error", err)
	}
	root, err := findRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := findRoot(root); err != nil {
		t.Error(err)
	}
}

func TestRunFlags(t *testing.T) {
	var out, errOut strings.Builder
	if err := run([]string{"-arch", "mips"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "-version is required") {
		t.Errorf("run without -version = %v", err)
	}
	if err := run([]string{"-version", "1.0.0", "-arch", "mips"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), `-arch "mips"`) {
		t.Errorf("run -arch mips = %v", err)
	}
	if err := run([]string{"-version", "1.0.0", "extra"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), `"extra"`) {
		t.Errorf("run with an argument = %v", err)
	}
}
