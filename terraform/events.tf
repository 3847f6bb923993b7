# Asynchronous work (docs/design.md, decision 4): the functions publish CloudEvents to
# this topic (EVENTS_SINK_URL=pubsub://projects/P/topics/T, ce-* attributes);
# the push subscription delivers them to the instance function at /events,
# which unwraps the Pub/Sub envelope. Handlers are idempotent; the janitor
# reconciles what a dropped message missed.
resource "google_pubsub_topic" "events" {
  name    = "${var.name_prefix}-events"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "events_to_instance" {
  name    = "${var.name_prefix}-events-to-instance"
  project = var.project_id
  topic   = google_pubsub_topic.events.id
  labels  = local.labels
  # The push request lasts at most this long: one event may run a deployment.
  ack_deadline_seconds       = 600
  message_retention_duration = "86400s"

  push_config {
    push_endpoint = "${google_cloud_run_v2_service.fn["instance"].uri}/events"
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloud_run_v2_service.fn["instance"].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

# The janitor's clock: a binary-mode CloudEvent (ce-* headers), because the
# janitor is a CloudEvent function that refuses a plain POST.
resource "google_cloud_scheduler_job" "janitor" {
  name             = "${var.name_prefix}-janitor"
  project          = var.project_id
  region           = var.region
  schedule         = var.janitor_schedule
  time_zone        = var.janitor_time_zone
  attempt_deadline = "${var.request_timeout_seconds}s"

  retry_config {
    # The next tick is the retry.
    retry_count = 0
  }

  http_target {
    uri         = google_cloud_run_v2_service.fn["janitor"].uri
    http_method = "POST"
    headers = {
      "Content-Type"   = "application/json"
      "ce-specversion" = "1.0"
      "ce-type"        = "io.challfn.janitor.run"
      "ce-source"      = "//cloudscheduler.googleapis.com/${var.name_prefix}-janitor"
      "ce-id"          = "scheduled-tick"
    }
    body = base64encode(jsonencode({ reason = "schedule" }))
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloud_run_v2_service.fn["janitor"].uri
    }
  }

  depends_on = [google_project_service.apis]
}
