package caddymodule

import (
	"fmt"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyai/gateway/policy"
)

// provisionAPIVersions compiles the api_version block.
func (g *Gateway) provisionAPIVersions() error {
	cfg := g.APIVersion
	if cfg == nil {
		return nil
	}
	settings := make(map[string]APIVersionSettings, len(cfg.Versions))
	for _, s := range cfg.Versions {
		if !slices.Contains(cfg.Supported, s.Version) {
			return fmt.Errorf("api_version: version %s has settings but is not in supported", s.Version)
		}
		settings[s.Version] = s
	}
	versions := make([]*policy.APIVersion, 0, len(cfg.Supported))
	for _, date := range cfg.Supported {
		v := &policy.APIVersion{Date: date}
		if s, ok := settings[date]; ok {
			dep, err := parseDeprecation(s.Deprecated, s.Sunset, s.DeprecationLink, s.ServeAfterSunset)
			if err != nil {
				return fmt.Errorf("api_version %s: %w", date, err)
			}
			v.Deprecation, v.Renames = dep, s.RenameParams
		}
		versions = append(versions, v)
	}
	av, err := policy.NewAPIVersions(cfg.Header, cfg.Default, cfg.Required, versions)
	if err != nil {
		return err
	}
	g.versions = av
	return nil
}

// parseDeprecation reads RFC 3339 deprecation and sunset times.
func parseDeprecation(deprecated, sunset, link string, serveAfter bool) (policy.Deprecation, error) {
	d := policy.Deprecation{Link: link, ServeAfterSunset: serveAfter}
	var err error
	if deprecated != "" {
		if d.Deprecated, err = time.Parse(time.RFC3339, deprecated); err != nil {
			return d, fmt.Errorf("parsing deprecated: %w", err)
		}
	}
	if sunset != "" {
		if d.Sunset, err = time.Parse(time.RFC3339, sunset); err != nil {
			return d, fmt.Errorf("parsing sunset: %w", err)
		}
		if d.Deprecated.IsZero() {
			d.Deprecated = d.Sunset // a sunset implies a deprecation
		}
	}
	return d, nil
}

// parseAPIVersion parses:
//
//	api_version {
//	    header <name>
//	    supported <date>...
//	    default <date>
//	    required
//	    version <date> {
//	        rename_param <from> <to>
//	        deprecated <RFC 3339 time>
//	        sunset <RFC 3339 time>
//	        deprecation_link <url>
//	        serve_after_sunset
//	    }
//	}
func parseAPIVersion(d *caddyfile.Dispenser) (*APIVersionConfig, error) {
	cfg := new(APIVersionConfig)
	if err := noArgs(d); err != nil {
		return nil, err
	}
	err := newSubdirectives("api_version", "version").each(d, func(name string) (err error) {
		switch name {
		case "header":
			cfg.Header, err = stringArg(d)
		case "supported":
			cfg.Supported, err = listArg(d)
		case "default":
			cfg.Default, err = stringArg(d)
		case "required":
			err = noArgs(d)
			cfg.Required = true
		case "version":
			var s APIVersionSettings
			if s, err = parseVersionSettings(d); err != nil {
				return err
			}
			for _, other := range cfg.Versions {
				if other.Version == s.Version {
					return d.Errf("api_version: version %s specified more than once", s.Version)
				}
			}
			cfg.Versions = append(cfg.Versions, s)
		default:
			return d.Errf("unrecognized api_version subdirective %q", name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if cfg.Header == "" {
		return nil, d.Err("api_version: header is required")
	}
	if len(cfg.Supported) == 0 {
		return nil, d.Err("api_version: supported is required")
	}
	return cfg, nil
}

func parseVersionSettings(d *caddyfile.Dispenser) (APIVersionSettings, error) {
	var s APIVersionSettings
	var err error
	if s.Version, err = stringArg(d); err != nil {
		return s, err
	}
	// stringArg consumed the date and checked no more args follow on the line; the block follows.
	err = newSubdirectives("version "+s.Version, "rename_param").each(d, func(name string) (err error) {
		switch name {
		case "rename_param":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("rename_param: expected <from> <to>, got %d values", len(args))
			}
			for _, r := range s.RenameParams {
				if r[0] == args[0] {
					return d.Errf("rename_param: %s renamed more than once", args[0])
				}
			}
			s.RenameParams = append(s.RenameParams, [2]string{args[0], args[1]})
		case "deprecated":
			s.Deprecated, err = rfc3339Arg(d)
		case "sunset":
			s.Sunset, err = rfc3339Arg(d)
		case "deprecation_link":
			s.DeprecationLink, err = stringArg(d)
		case "serve_after_sunset":
			err = noArgs(d)
			s.ServeAfterSunset = true
		default:
			return d.Errf("unrecognized version subdirective %q", name)
		}
		return err
	})
	return s, err
}
