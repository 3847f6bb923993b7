#!/usr/bin/env bash
# Builds challfn's three function images (deploy/images/Dockerfile).
#
#   scripts/build-images.sh [--registry REG] [--tag TAG] [--push] [--binaries-only]
#
# Always: builds every binary the images contain (static, -trimpath) into
# .cache/images/<function>/ with the layout of the image, and smoke-tests
# them (static linking, the pinned pulumi version, the language host and
# challfn-sandbox beside the engine, the jail a scenario program gets here,
# each function serving /healthcheck or accepting a CloudEvent when its main
# exists, the HTTP functions over HTTP/1.1, h2c and gRPC). Then, if a container engine answers (docker,
# podman or buildah), builds REG/challfn-<function>:TAG for each function
# and pushes them with --push. Without an engine it says so and stops after
# the binaries: build the images elsewhere with the same command.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
registry="${REGISTRY:-challfn}"
tag="${TAG:-dev}"
push=false
binaries_only=false
while [[ $# -gt 0 ]]; do
	case "$1" in
	--registry) registry="$2"; shift 2 ;;
	--tag) tag="$2"; shift 2 ;;
	--push) push=true; shift ;;
	--binaries-only) binaries_only=true; shift ;;
	-h | --help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "unknown argument $1" >&2; exit 2 ;;
	esac
done
if [[ "$tag" == latest ]]; then
	echo "refusing the tag latest: the manifests require pinned images" >&2
	exit 2
fi

PULUMI_VERSION=v3.220.0
stage="$root/.cache/images"
functions=(challenge instance janitor)

# 1. Binaries, as the Dockerfile builds them.
"$root/scripts/install-pulumi.sh"
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
rm -rf "$stage"
mkdir -p "$stage/bin"
built=()
for pkg in pulumi-language-go challfn-sandbox challfn-challenge challfn-instance challfn-janitor; do
	if [[ -d "$root/cmd/$pkg" ]]; then
		(cd "$root" && go build -ldflags "-s -w" -o "$stage/bin/$pkg" "./cmd/$pkg")
		built+=("$pkg")
	else
		echo "warning: cmd/$pkg does not exist yet, not built" >&2
	fi
done
cp "$root/.bin/pulumi" "$stage/bin/pulumi"
for fn in "${functions[@]}"; do
	d="$stage/$fn/usr/local/bin"
	mkdir -p "$d"
	cp "$stage/bin/pulumi" "$d/"
	[[ -x "$stage/bin/pulumi-language-go" ]] && cp "$stage/bin/pulumi-language-go" "$d/"
	[[ -x "$stage/bin/challfn-sandbox" ]] && cp "$stage/bin/challfn-sandbox" "$d/"
	[[ -x "$stage/bin/challfn-$fn" ]] && cp "$stage/bin/challfn-$fn" "$d/"
done

# 2. Smoke tests of what the images contain.
fail() { echo "smoke test failed: $*" >&2; exit 1; }
for b in "$stage"/bin/*; do
	[[ "$(basename "$b")" == pulumi ]] && continue # built by install-pulumi.sh, checked below
	go version -m "$b" | grep -q 'CGO_ENABLED=0' || fail "$b is not a static (CGO_ENABLED=0) binary: the distroless images cannot run it"
done
got="$("$stage/bin/pulumi" version)"
[[ "$got" == "$PULUMI_VERSION" ]] || fail "pulumi version $got, want $PULUMI_VERSION"
for fn in "${functions[@]}"; do
	d="$stage/$fn/usr/local/bin"
	[[ -x "$d/pulumi-language-go" ]] || fail "$fn: no pulumi-language-go next to pulumi"
	[[ -x "$d/challfn-sandbox" ]] || fail "$fn: no challfn-sandbox next to pulumi"
done
# The jail scenario programs get on this machine (the images get theirs at start, logged
# as sandbox.flavor; docs/threat-model.md says which guarantee holds where).
"$stage/bin/challfn-sandbox" probe >&2 || fail "challfn-sandbox probe"

# A function main must start and answer on loopback. Only what needs no
# external service is exercised: /healthcheck for the HTTP functions (503 with
# the reason, as etcd is unreachable: a cold start without etcd must say so), a
# malformed request (400, not a crash) for the janitor.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smoke_fn() {
	local fn="$1" path="$2" want="$3" grpc="${4:-}" port pid code=000 h2 status
	port="$(free_port)"
	(
		cd "$stage"
		PORT="$port" LOCAL_ONLY=true HOME="$stage/home" PATH="$stage/$fn/usr/local/bin:$PATH" \
			ETCD_ENDPOINTS="${SMOKE_ETCD_ENDPOINTS:-http://127.0.0.1:1}" PULUMI_BACKEND_URL="file://$stage/state" \
			PULUMI_CONFIG_PASSPHRASE=smoke SCENARIO_STORE_URL="file://$stage/scenarios" \
			exec "$stage/$fn/usr/local/bin/challfn-$fn"
	) >"$stage/$fn.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 50); do
		code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path" || true)"
		[[ "$code" != 000 ]] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if [[ -n "$grpc" && "$code" == "$want" ]]; then
		# The same port speaks h2c: REST over HTTP/2 cleartext, and a gRPC call
		# that gets the not-ready status (14 UNAVAILABLE) in its trailers.
		h2="$(curl -s --http2-prior-knowledge -o /dev/null -w '%{http_version} %{http_code}' "http://127.0.0.1:$port$path" || true)"
		status="$(curl -s --http2-prior-knowledge -X POST -H 'Content-Type: application/grpc' -H 'TE: trailers' \
			--data-binary @/dev/null -D - -o /dev/null "http://127.0.0.1:$port$grpc" | tr -d '\r' | sed -n 's/^grpc-status: //p' || true)"
	fi
	kill "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	[[ "$code" == "$want" ]] || fail "$fn: GET $path answered $code, want $want (log: $stage/$fn.log)"
	echo "smoke: challfn-$fn answers $path with $code" >&2
	if [[ -n "$grpc" ]]; then
		[[ "$h2" == "2 $want" ]] || fail "$fn: GET $path over h2c answered '$h2', want '2 $want' (log: $stage/$fn.log)"
		[[ "$status" == 14 ]] || fail "$fn: gRPC $grpc answered grpc-status '$status', want 14 (log: $stage/$fn.log)"
		echo "smoke: challfn-$fn answers $path over h2c and gRPC $grpc with grpc-status $status" >&2
	fi
}
mkdir -p "$stage/home" "$stage/state" "$stage/scenarios"
[[ -x "$stage/bin/challfn-challenge" ]] && smoke_fn challenge /healthcheck 503 /api.v1.challenge.ChallengeStore/RetrieveChallenge
[[ -x "$stage/bin/challfn-instance" ]] && smoke_fn instance /healthcheck 503 /api.v1.instance.InstanceManager/RetrieveInstance
[[ -x "$stage/bin/challfn-janitor" ]] && smoke_fn janitor / 400
echo "binaries built and smoke-tested in $stage (${built[*]:-none of the cmd/ mains exist yet} + pulumi)" >&2
$binaries_only && exit 0

# 3. Images, when a container engine is available.
engine=""
for e in docker podman; do
	if command -v "$e" >/dev/null && "$e" info >/dev/null 2>&1; then engine="$e"; break; fi
done
if [[ -z "$engine" ]] && command -v buildah >/dev/null; then engine=buildah; fi
if [[ -z "$engine" ]]; then
	echo "no container engine answers (docker/podman/buildah): images not built." >&2
	echo "on a machine with one: scripts/build-images.sh --registry $registry --tag $tag [--push]" >&2
	exit 0
fi
for fn in "${functions[@]}"; do
	image="$registry/challfn-$fn:$tag"
	case "$engine" in
	buildah) buildah bud -f "$root/deploy/images/Dockerfile" --target "$fn" -t "$image" "$root" ;;
	*) DOCKER_BUILDKIT=1 "$engine" build -f "$root/deploy/images/Dockerfile" --target "$fn" -t "$image" "$root" ;;
	esac
	if $push; then
		case "$engine" in
		buildah) buildah push "$image" ;;
		*) "$engine" push "$image" ;;
		esac
	fi
	echo "built $image" >&2
done
