terraform {
  required_version = ">= 1.5.0"
  required_providers {
    google = {
      source = "hashicorp/google"
      # 6.x: google_cloud_run_v2_service has deletion_protection,
      # custom_audiences and Direct VPC egress (network_interfaces).
      version = ">= 6.0.0, < 8.0.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
