# One base URL for the REST API and chall-manager's gRPC services: a global
# external Application Load Balancer whose URL map sends /api/v1/challenge*,
# /healthcheck and the gRPC service api.v1.challenge.ChallengeStore to the
# challenge function and /api/v1/instance* and api.v1.instance.InstanceManager
# to the instance function (serverless NEGs). Request timeouts are Cloud
# Run's (serverless NEG backends have none).
resource "google_compute_global_address" "api" {
  name    = "${var.name_prefix}-api"
  project = var.project_id

  depends_on = [google_project_service.apis]
}

resource "google_compute_region_network_endpoint_group" "api" {
  for_each              = local.rest_functions
  name                  = "${var.name_prefix}-${each.key}"
  project               = var.project_id
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = google_cloud_run_v2_service.fn[each.key].name
  }
}

resource "google_compute_backend_service" "api" {
  for_each              = local.rest_functions
  name                  = "${var.name_prefix}-${each.key}"
  project               = var.project_id
  load_balancing_scheme = "EXTERNAL_MANAGED"
  # HTTP/2 to the backend, so gRPC calls are not downgraded on the way to
  # the functions' h2c ports (REST is fine over HTTP/2 too).
  protocol = "HTTP2"
  backend {
    group = google_compute_region_network_endpoint_group.api[each.key].id
  }
  security_policy = one(google_compute_security_policy.api[*].id)
  log_config {
    enable = true
  }
}

# The CTFd plugin cannot send credentials: with public_access, restrict who
# reaches the API by source address instead.
resource "google_compute_security_policy" "api" {
  count   = length(var.allowed_source_ranges) > 0 ? 1 : 0
  name    = "${var.name_prefix}-api"
  project = var.project_id

  rule {
    action   = "allow"
    priority = 1000
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = var.allowed_source_ranges
      }
    }
    description = "allowed callers"
  }

  rule {
    action   = "deny(403)"
    priority = 2147483647
    match {
      versioned_expr = "SRC_IPS_V1"
      config {
        src_ip_ranges = ["*"]
      }
    }
    description = "everyone else"
  }
}

resource "google_compute_url_map" "api" {
  name    = "${var.name_prefix}-api"
  project = var.project_id
  # Unknown paths reach the challenge function, whose router answers 404
  # with the contract's error body.
  default_service = google_compute_backend_service.api["challenge"].id

  host_rule {
    hosts        = ["*"]
    path_matcher = "api"
  }

  path_matcher {
    name            = "api"
    default_service = google_compute_backend_service.api["challenge"].id

    path_rule {
      paths   = ["/api/v1/challenge", "/api/v1/challenge/*", "/healthcheck"]
      service = google_compute_backend_service.api["challenge"].id
    }
    path_rule {
      paths   = ["/api/v1/instance", "/api/v1/instance/*"]
      service = google_compute_backend_service.api["instance"].id
    }
    # gRPC calls are POST /<package>.<service>/<method>.
    path_rule {
      paths   = ["/api.v1.challenge.ChallengeStore/*"]
      service = google_compute_backend_service.api["challenge"].id
    }
    path_rule {
      paths   = ["/api.v1.instance.InstanceManager/*"]
      service = google_compute_backend_service.api["instance"].id
    }
  }
}

resource "google_compute_managed_ssl_certificate" "api" {
  count   = local.https ? 1 : 0
  name    = "${var.name_prefix}-api"
  project = var.project_id
  managed {
    domains = [var.domain]
  }
}

resource "google_compute_target_https_proxy" "api" {
  count            = local.https ? 1 : 0
  name             = "${var.name_prefix}-api"
  project          = var.project_id
  url_map          = google_compute_url_map.api.id
  ssl_certificates = [google_compute_managed_ssl_certificate.api[0].id]
}

resource "google_compute_target_http_proxy" "api" {
  count   = local.https ? 0 : 1
  name    = "${var.name_prefix}-api"
  project = var.project_id
  url_map = google_compute_url_map.api.id
}

resource "google_compute_global_forwarding_rule" "api" {
  name                  = "${var.name_prefix}-api"
  project               = var.project_id
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.api.id
  port_range            = local.https ? "443" : "80"
  target                = local.https ? one(google_compute_target_https_proxy.api[*].id) : one(google_compute_target_http_proxy.api[*].id)
}
