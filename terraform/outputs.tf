output "api_url" {
  description = "Base URL of the REST API: the CTFd plugin's chall-manager URL."
  value       = local.api_url
}

output "api_ip" {
  description = "IP address of the load balancer (the A record of var.domain)."
  value       = google_compute_global_address.api.address
}

output "service_urls" {
  description = "run.app URL of each function."
  value       = { for k, s in google_cloud_run_v2_service.fn : k => s.uri }
}

output "state_bucket" {
  description = "Bucket of the Pulumi state and compiled scenarios."
  value       = google_storage_bucket.state.name
}

output "events_topic" {
  description = "Pub/Sub topic of the asynchronous events."
  value       = google_pubsub_topic.events.id
}

output "service_accounts" {
  description = "Service account email of each function."
  value       = { for k, a in google_service_account.fn : k => a.email }
}
