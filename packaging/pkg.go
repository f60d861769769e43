package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

const description = `Metrics and sensor ingestion agent for edge devices
fpagent takes InfluxDB line protocol over HTTP, TCP and UDP, and MQTT
messages, makes every reading durable in a write-ahead log before it
acknowledges it, and batches the readings into an embedded DuckDB database
that a local HTTP API serves. It runs as the fpagent service, confined by
systemd, with its data in /var/lib/fpagent.`

// Where each distribution keeps things.
type layout struct {
	unitDir string // systemd system units
	envFile string // the service's EnvironmentFile
}

var layouts = map[string]layout{
	"deb": {unitDir: "/lib/systemd/system", envFile: "/etc/default/fpagent"},
	"rpm": {unitDir: "/usr/lib/systemd/system", envFile: "/etc/sysconfig/fpagent"},
}

// productionConfig is agent.yaml.example with data_dir in the service's
// state directory and a header that says where it comes from.
func productionConfig(example []byte) ([]byte, error) {
	const from, to = "data_dir: ./fpagent-data\n", "data_dir: /var/lib/fpagent\n"
	if n := bytes.Count(example, []byte(from)); n != 1 {
		return nil, fmt.Errorf("agent.yaml.example has %d lines %q, want exactly 1: update productionConfig in packaging/pkg.go", n, strings.TrimSpace(from))
	}
	const header = `# /etc/fpagent/agent.yaml: the configuration of the fpagent service, which runs
# fpagent -config /etc/fpagent/agent.yaml. This is agent.yaml.example with
# data_dir set to /var/lib/fpagent, the service's state directory; a data_dir
# elsewhere also needs ReadWritePaths= in a drop-in (systemctl edit fpagent).
# Check a change with: fpagent check -config /etc/fpagent/agent.yaml
# then apply it: systemctl reload fpagent (what SIGHUP re-reads; the log
# names what needs a restart) or systemctl restart fpagent.
#
`
	return append([]byte(header), bytes.Replace(example, []byte(from), []byte(to), 1)...), nil
}

// debVersion is the version string dpkg sees: a pre-release sorts before
// its release (1.3.0~rc1 < 1.3.0).
func (o *options) debVersion() string {
	base, pre, _ := strings.Cut(o.Version, "-")
	if pre != "" {
		base += "~" + pre
	}
	return base + "-" + o.Release
}

// changelog is a minimal changelog.Debian.gz, compressed the way lintian
// wants it (maximum compression, no name or time in the header).
func (o *options) changelog() ([]byte, error) {
	short := o.Commit
	if len(short) > 12 {
		short = short[:12]
	}
	text := fmt.Sprintf("fpagent (%s) unstable; urgency=medium\n\n  * Release %s (commit %s).\n\n -- %s  %s\n",
		o.debVersion(), o.Version, short, o.Maintainer, o.mtime.Format("Mon, 02 Jan 2006 15:04:05 -0700"))
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write([]byte(text)); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// stage writes into dir the generated files a package needs and a copy of
// the repository files it ships, so that one package is one snapshot even
// while the tree changes.
func (b *builder) stage(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"agent.yaml.example", "LICENSE", "README.md"} {
		data, err := os.ReadFile(filepath.Join(b.opts.Root, name))
		if name == "README.md" && os.IsNotExist(err) {
			fmt.Fprintf(b.log, "warning: %s is missing; the package has no README\n", filepath.Join(b.opts.Root, name))
			continue
		}
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	example, err := os.ReadFile(filepath.Join(dir, "agent.yaml.example"))
	if err != nil {
		return err
	}
	cfg, err := productionConfig(example)
	if err != nil {
		return err
	}
	cl, err := b.opts.changelog()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "agent.yaml"), cfg, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "changelog.Debian.gz"), cl, 0o644)
}

// info describes the package of format for the binary bin built for arch.
func (b *builder) info(format, arch, bin, staged string) (*nfpm.Info, error) {
	o := b.opts
	deb, rpm, err := dependencies(bin)
	if err != nil {
		return nil, err
	}
	root := o.Root
	pkgFiles := filepath.Join(root, "packaging", "files")
	lay := layouts[format]
	file := func(src, dst string, mode os.FileMode) *files.Content {
		return &files.Content{Source: src, Destination: dst, FileInfo: &files.ContentFileInfo{Mode: mode, MTime: o.mtime}}
	}
	conf := func(src, dst string, mode os.FileMode, group string) *files.Content {
		c := file(src, dst, mode)
		c.Type = files.TypeConfigNoReplace
		c.FileInfo.Owner, c.FileInfo.Group = "root", group
		return c
	}
	contents := files.Contents{
		file(bin, "/usr/bin/fpagent", 0o755),
		file(filepath.Join(root, "systemd", "fpagent.service"), lay.unitDir+"/fpagent.service", 0o644),
		conf(filepath.Join(pkgFiles, "default"), lay.envFile, 0o644, "root"),
	}
	readme := filepath.Join(staged, "README.md")
	_, err = os.Stat(readme)
	hasReadme := err == nil
	scripts := nfpm.Scripts{}
	switch format {
	case "deb":
		// dpkg-statoverride in the postinst gives it to group fpagent, mode 0640.
		contents = append(contents,
			conf(filepath.Join(staged, "agent.yaml"), "/etc/fpagent/agent.yaml", 0o644, "root"),
			file(filepath.Join(staged, "agent.yaml.example"), "/usr/share/doc/fpagent/examples/agent.yaml.example", 0o644),
			file(filepath.Join(pkgFiles, "deb", "copyright"), "/usr/share/doc/fpagent/copyright", 0o644),
			file(filepath.Join(staged, "changelog.Debian.gz"), "/usr/share/doc/fpagent/changelog.Debian.gz", 0o644),
		)
		if hasReadme {
			contents = append(contents, file(readme, "/usr/share/doc/fpagent/README.md", 0o644))
		}
		scripts = nfpm.Scripts{
			PostInstall: filepath.Join(pkgFiles, "deb", "postinst"),
			PreRemove:   filepath.Join(pkgFiles, "deb", "prerm"),
			PostRemove:  filepath.Join(pkgFiles, "deb", "postrm"),
		}
		// The postinst creates the user with adduser (Debian policy 9.2.2).
		deb = append(deb, "adduser")
	case "rpm":
		doc := func(src, dst, typ string) *files.Content {
			c := file(src, dst, 0o644)
			c.Type = typ
			return c
		}
		state := &files.Content{Destination: "/var/lib/fpagent", Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Owner: "fpagent", Group: "fpagent", Mode: 0o750, MTime: o.mtime}}
		etc := &files.Content{Destination: "/etc/fpagent", Type: files.TypeDir,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: 0o755, MTime: o.mtime}}
		contents = append(contents, etc,
			conf(filepath.Join(staged, "agent.yaml"), "/etc/fpagent/agent.yaml", 0o640, "fpagent"),
			doc(filepath.Join(staged, "agent.yaml.example"), "/usr/share/doc/fpagent/agent.yaml.example", files.TypeRPMDoc),
			doc(filepath.Join(staged, "LICENSE"), "/usr/share/licenses/fpagent/LICENSE", files.TypeRPMLicense),
			state,
		)
		if hasReadme {
			contents = append(contents, doc(readme, "/usr/share/doc/fpagent/README.md", files.TypeRPMDoc))
		}
		scripts = nfpm.Scripts{
			PreInstall:  filepath.Join(pkgFiles, "rpm", "pre"),
			PostInstall: filepath.Join(pkgFiles, "rpm", "post"),
			PreRemove:   filepath.Join(pkgFiles, "rpm", "preun"),
			PostRemove:  filepath.Join(pkgFiles, "rpm", "postun"),
		}
		// The %pre creates the user with useradd.
		rpm = append(rpm, "shadow-utils")
	}
	depends, desc := deb, description
	if format == "rpm" {
		// RPM keeps the summary apart from the description.
		_, desc, _ = strings.Cut(description, "\n")
		depends = rpm
	}
	version, pre, _ := strings.Cut(o.Version, "-")
	info := &nfpm.Info{
		Name:          "fpagent",
		Arch:          arch,
		Platform:      "linux",
		Version:       version,
		Prerelease:    pre,
		VersionSchema: "none",
		Release:       o.Release,
		Section:       "net",
		Priority:      "optional",
		Maintainer:    o.Maintainer,
		Vendor:        "fpagent",
		Homepage:      homepage,
		License:       "Apache-2.0",
		Description:   desc,
		MTime:         o.mtime,
		Overridables: nfpm.Overridables{
			Depends:  depends,
			Contents: contents,
			Scripts:  scripts,
			Umask:    0o022,
			RPM: nfpm.RPM{
				Summary:     "Metrics and sensor ingestion agent for edge devices",
				Group:       "System Environment/Daemons",
				Compression: o.Compression,
				BuildHost:   "fpagent-packaging",
			},
			Deb: nfpm.Deb{Compression: o.Compression},
		},
	}
	return nfpm.WithDefaults(info), nil
}

// pkg builds one package and returns its path.
func (b *builder) pkg(format, arch, bin string) (string, error) {
	staged := filepath.Join(b.opts.Out, "build", "staging-"+format+"-"+arch)
	if err := b.stage(staged); err != nil {
		return "", err
	}
	info, err := b.info(format, arch, bin, staged)
	if err != nil {
		return "", err
	}
	packager, err := nfpm.Get(format)
	if err != nil {
		return "", err
	}
	if err := nfpm.Validate(info); err != nil {
		return "", fmt.Errorf("%s/%s: %w", format, arch, err)
	}
	path := filepath.Join(b.opts.Out, packager.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	info.Target = path
	if err := packager.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return "", fmt.Errorf("%s/%s: %w", format, arch, err)
	}
	return path, f.Close()
}
