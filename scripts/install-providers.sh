#!/usr/bin/env bash
# Builds challfn's own Pulumi resource providers into .bin/, next to the Pulumi CLI.
#
# The engine finds a resource plugin named pulumi-resource-<package> on PATH (an "ambient"
# plugin, unless PULUMI_IGNORE_AMBIENT_PLUGINS is set) before looking in the plugin cache or
# trying a download, and shared/iac puts the CLI's directory first on the engine's PATH: a
# provider in .bin/ is therefore found without `pulumi plugin install` and without network.
# Each provider is its own Go module under providers/; it is rebuilt every time (cheap with
# the Go build cache) and replaced atomically, so running engines are not disturbed.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$root/.bin"
mkdir -p "$bin"

for dir in "$root"/providers/*/; do
	[[ -f $dir/go.mod ]] || continue
	name="$(basename "$dir")"
	(cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/pulumi-resource-$name.tmp" .)
	mv -f "$bin/pulumi-resource-$name.tmp" "$bin/pulumi-resource-$name"
	echo "pulumi-resource-$name built into $bin" >&2
done
