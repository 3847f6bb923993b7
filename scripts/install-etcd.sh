#!/usr/bin/env bash
# Installs the Debian etcd server (3.4.x) used by the multi-member cluster fault tests
# (e2e/faults_test.go starts three `etcd` processes on loopback). Idempotent: does nothing
# when an `etcd` binary is already on PATH or at /usr/bin/etcd. Without apt (or without
# root) it only says so: the tests then fall back to embedded members.
set -euo pipefail

if command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "install-etcd: no apt-get; the cluster fault tests use embedded members" >&2
	exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
		echo "install-etcd: not root and no sudo; the cluster fault tests use embedded members" >&2
		exit 0
	fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The package's post-install starts a system etcd through the init system when there is
# one; in a container there is none, and the tests start their own processes anyway.
$sudo apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
# Do not leave a system etcd listening on the default ports (2379/2380) where a
# service manager did start one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
	$sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi
command -v etcd >/dev/null 2>&1 || [[ -x /usr/bin/etcd ]]
