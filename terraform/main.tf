data "google_project" "this" {
  project_id = var.project_id
}

locals {
  https   = var.domain != ""
  api_url = local.https ? "https://${var.domain}" : "http://${google_compute_global_address.api.address}"

  # Per-function settings. The REST functions sit behind the load balancer;
  # the janitor only takes Cloud Scheduler's calls (internal traffic).
  functions = {
    challenge = {
      http        = true
      ingress     = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      concurrency = 4 # compiling a scenario is CPU-bound
      min         = 0
      cpu         = "2"
      memory      = "4Gi"
    }
    instance = {
      http        = true
      ingress     = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
      concurrency = 200 # deployments queue inside (ENGINE_CONCURRENCY); reads do not wait behind them
      min         = var.instance_min_instances
      cpu         = "1"
      memory      = "2Gi"
    }
    janitor = {
      http        = false
      ingress     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
      concurrency = 1
      min         = 0
      cpu         = "1"
      memory      = "1Gi"
    }
  }
  rest_functions = toset([for k, v in local.functions : k if v.http])

  env = {
    ETCD_ENDPOINTS              = var.etcd_endpoints
    ETCD_USERNAME               = var.etcd_username
    ETCD_PREFIX                 = "/challfn"
    LOCK_TTL                    = "10s"
    PULUMI_BACKEND_URL          = "gs://${google_storage_bucket.state.name}/pulumi"
    SCENARIO_STORE_URL          = "gs://${google_storage_bucket.state.name}?prefix=scenarios/"
    DEPLOY_TIMEOUT              = "${var.deploy_timeout_seconds}s"
    EVENTS_SINK_URL             = "pubsub://${google_pubsub_topic.events.id}"
    OCI_ALLOWED_REGISTRIES      = var.oci_allowed_registries
    LOG_LEVEL                   = var.log_level
    OTEL_EXPORTER_OTLP_ENDPOINT = var.otel_exporter_otlp_endpoint
    PULUMI_SKIP_UPDATE_CHECK    = "true"
  }
  secret_env = { for k, v in {
    PULUMI_CONFIG_PASSPHRASE = var.passphrase_secret
    API_TOKENS               = var.api_tokens_secret
    ETCD_PASSWORD            = var.etcd_password_secret
  } : k => v if v != "" }

  labels = {
    app = var.name_prefix
  }
}

resource "google_project_service" "apis" {
  for_each = toset([
    "run.googleapis.com",
    "pubsub.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "secretmanager.googleapis.com",
    "iam.googleapis.com",
  ])
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# Pulumi state (gs://BUCKET/pulumi) and compiled scenarios (scenarios/).
resource "google_storage_bucket" "state" {
  name                        = "${var.project_id}-${var.name_prefix}-state"
  project                     = var.project_id
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels
  versioning {
    # Pulumi checkpoints are rewritten on every operation: versions let an
    # operator roll a corrupted stack back.
    enabled = true
  }
  lifecycle_rule {
    condition {
      num_newer_versions = 20
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_cloud_run_v2_service" "fn" {
  for_each            = local.functions
  name                = "${var.name_prefix}-${each.key}"
  project             = var.project_id
  location            = var.region
  ingress             = each.value.ingress
  deletion_protection = var.deletion_protection
  labels              = local.labels
  # One Google ID token (audience = the API URL) is valid for both REST
  # functions behind the load balancer.
  custom_audiences = each.value.http ? [local.api_url] : []

  template {
    service_account                  = google_service_account.fn[each.key].email
    timeout                          = "${var.request_timeout_seconds}s"
    max_instance_request_concurrency = each.value.concurrency
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    labels                           = local.labels

    scaling {
      min_instance_count = each.value.min
      max_instance_count = var.max_instances[each.key]
    }

    dynamic "vpc_access" {
      for_each = var.vpc_network != "" || var.vpc_connector != "" ? [1] : []
      content {
        connector = var.vpc_connector != "" ? var.vpc_connector : null
        egress    = "PRIVATE_RANGES_ONLY"
        dynamic "network_interfaces" {
          for_each = var.vpc_network != "" ? [1] : []
          content {
            network    = var.vpc_network
            subnetwork = var.vpc_subnetwork
          }
        }
      }
    }

    containers {
      image = var.images[each.key]
      ports {
        # h2c: end-to-end HTTP/2 for the functions serving REST and gRPC
        # (gRPC needs it; REST works over it). The janitor is a CloudEvent
        # function served by funcframework, which speaks HTTP/1.1 only.
        name           = each.value.http ? "h2c" : "http1"
        container_port = 8080
      }
      resources {
        limits = {
          cpu    = each.value.cpu
          memory = each.value.memory
        }
        # Request-based billing: nothing runs after a response (docs/design.md, decision 4).
        cpu_idle          = true
        startup_cpu_boost = true
      }
      dynamic "env" {
        for_each = merge(local.env, { OTEL_SERVICE_NAME = "${var.name_prefix}-${each.key}" })
        content {
          name  = env.key
          value = env.value
        }
      }
      dynamic "env" {
        for_each = local.secret_env
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }
      # Direct VPC egress may take a while to connect at start. A CloudEvent
      # function answers 400 to a plain GET: the janitor gets a TCP probe.
      startup_probe {
        period_seconds    = 5
        timeout_seconds   = 3
        failure_threshold = 24
        dynamic "http_get" {
          for_each = each.value.http ? [1] : []
          content {
            path = "/healthcheck"
          }
        }
        dynamic "tcp_socket" {
          for_each = each.value.http ? [] : [1]
          content {
            port = 8080
          }
        }
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  depends_on = [google_project_service.apis]
}
