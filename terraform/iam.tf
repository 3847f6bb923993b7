# One service account per function, with only what it uses: the state
# bucket, the secrets, publishing events. Rights for what scenarios deploy
# are opt-in (deployer_roles, previewer_roles).
resource "google_service_account" "fn" {
  for_each     = local.functions
  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = "challfn ${each.key} function"
}

# Calls the instance function (Pub/Sub push) and the janitor (Scheduler).
resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-invoker"
  display_name = "challfn event and scheduler invoker"
}

resource "google_storage_bucket_iam_member" "state" {
  for_each = local.functions
  bucket   = google_storage_bucket.state.name
  role     = "roles/storage.objectAdmin"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_secret_manager_secret_iam_member" "fn" {
  for_each  = { for p in setproduct(keys(local.functions), values(local.secret_env)) : "${p[0]}/${p[1]}" => p }
  project   = var.project_id
  secret_id = each.value[1]
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.fn[each.value[0]].email}"
}

resource "google_pubsub_topic_iam_member" "publish" {
  for_each = local.functions
  project  = var.project_id
  topic    = google_pubsub_topic.events.name
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${google_service_account.fn[each.key].email}"
}

resource "google_project_iam_member" "deployer" {
  for_each = { for p in setproduct(["instance", "janitor"], var.deployer_roles) : "${p[0]}/${p[1]}" => p }
  project  = var.project_id
  role     = each.value[1]
  member   = "serviceAccount:${google_service_account.fn[each.value[0]].email}"
}

resource "google_project_iam_member" "previewer" {
  for_each = toset(var.previewer_roles)
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.fn["challenge"].email}"
}

resource "google_cloud_run_v2_service_iam_member" "invoker_instance" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.fn["instance"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.invoker.email}"
}

resource "google_cloud_run_v2_service_iam_member" "invoker_janitor" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.fn["janitor"].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.invoker.email}"
}

# Pub/Sub mints the push subscription's OIDC tokens as the invoker account.
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

# Private by default (docs/design.md, decision 10): only the listed members may call
# the REST API...
resource "google_cloud_run_v2_service_iam_member" "api_invokers" {
  for_each = { for p in setproduct(tolist(local.rest_functions), var.invokers) : "${p[0]}/${p[1]}" => p }
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.fn[each.value[0]].name
  role     = "roles/run.invoker"
  member   = each.value[1]
}

# ...unless public_access opens it (the CTFd plugin sends no credentials).
resource "google_cloud_run_v2_service_iam_member" "public" {
  for_each = var.public_access ? local.rest_functions : toset([])
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
