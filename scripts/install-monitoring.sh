#!/usr/bin/env bash
# install-monitoring.sh — installs the local monitoring fixture, idempotently:
#   .bin/jaeger        Jaeger v2.13.0 built from tools/jaeger (Go module proxy)
#   prometheus         Debian package (also gives promtool)
#   alertmanager       Debian package prometheus-alertmanager (also gives amtool)
# Nothing is started: the Debian packages' services are left alone (see
# knative/monitoring/README.md for running the binaries on loopback).
#
# Env: CHALLFN_JAEGER (target path, default .bin/jaeger), SKIP_APT=1 to skip apt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
JAEGER_MODULE_VERSION=v1.76.0 # = Jaeger v2.13.0
JAEGER_VERSION=v2.13.0
JAEGER_BIN=${CHALLFN_JAEGER:-$ROOT/.bin/jaeger}
STAMP="$JAEGER_BIN.version"

log() { printf '[install-monitoring] %s\n' "$*" >&2; }

build_jaeger() {
	# The stamp records the module version the binary was built from: `jaeger
	# version` prints empty fields unless ldflags set them, so it cannot be asked.
	if [[ -x $JAEGER_BIN && -f $STAMP && $(cat "$STAMP") == "$JAEGER_MODULE_VERSION" ]]; then
		log "jaeger $JAEGER_VERSION already built at $JAEGER_BIN"
		return
	fi
	log "building jaeger $JAEGER_VERSION (module $JAEGER_MODULE_VERSION) into $JAEGER_BIN; ~4 min cold on 2 cores"
	mkdir -p "$(dirname "$JAEGER_BIN")"
	local tmp="$JAEGER_BIN.tmp.$$"
	(
		cd "$ROOT/tools/jaeger"
		# tools/jaeger/go.sum is committed, so no GONOSUMDB is needed.
		go build -trimpath -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION" \
			-o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger
	)
	mv -f "$tmp" "$JAEGER_BIN"
	echo "$JAEGER_MODULE_VERSION" >"$STAMP"
}

install_apt() {
	local missing=()
	command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
	if ((${#missing[@]} == 0)); then
		log "prometheus and alertmanager already installed"
		return
	fi
	if [[ ${SKIP_APT:-0} == 1 ]]; then
		log "SKIP_APT=1: not installing ${missing[*]}"
		return
	fi
	local sudo=()
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install ${missing[*]}"; return 1; }
		sudo=(sudo)
	fi
	log "apt-get install ${missing[*]}"
	"${sudo[@]}" apt-get update -qq
	# The postinst tries to start the services; on a systemd host they will then
	# listen on :9090/:9093 — stop them if the fixture needs those ports.
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build_jaeger
install_apt

cat >&2 <<EOF
[install-monitoring] ready:
  jaeger        $JAEGER_BIN  (run: $JAEGER_BIN --config knative/monitoring/local/jaeger.yaml)
  prometheus    $(command -v prometheus || echo missing)
  promtool      $(command -v promtool || echo missing)
  alertmanager  $(command -v prometheus-alertmanager || echo missing)
  amtool        $(command -v amtool || echo missing)
EOF
