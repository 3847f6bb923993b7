variable "project_id" {
  description = "Google Cloud project that hosts the functions."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services, the scheduler job and the serverless NEGs."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (services, accounts, bucket, topic)."
  type        = string
  default     = "challfn"
}

variable "images" {
  description = "Container image of each function (keys challenge, instance, janitor), built by scripts/build-images.sh and pinned by tag or, better, digest."
  type        = map(string)
  validation {
    condition     = alltrue([for k in ["challenge", "instance", "janitor"] : contains(keys(var.images), k)])
    error_message = "images needs the keys challenge, instance and janitor."
  }
  validation {
    condition     = alltrue([for v in values(var.images) : length(regexall("(@sha256:[0-9a-f]{64}|:[A-Za-z0-9_][A-Za-z0-9_.-]*)$", v)) > 0 && !endswith(v, ":latest")])
    error_message = "Pin every image by digest or by a tag other than latest."
  }
}

variable "etcd_endpoints" {
  description = "Comma-separated etcd client URLs (e.g. http://10.0.0.5:2379), reachable through the VPC egress below."
  type        = string
}

variable "etcd_username" {
  description = "etcd user name, empty when etcd has no authentication."
  type        = string
  default     = ""
}

variable "etcd_password_secret" {
  description = "Secret Manager secret id holding the etcd password (empty: none)."
  type        = string
  default     = ""
}

variable "passphrase_secret" {
  description = "Secret Manager secret id holding PULUMI_CONFIG_PASSPHRASE (create it first, see docs/deploy-cloudrun.md)."
  type        = string
}

variable "api_tokens_secret" {
  description = "Secret Manager secret id holding API_TOKENS (bearer tokens, comma or newline separated). Set it when public_access is true."
  type        = string
  default     = ""
}

variable "vpc_network" {
  description = "VPC network for Direct VPC egress to etcd (with vpc_subnetwork). Leave empty to use vpc_connector or no VPC."
  type        = string
  default     = ""
}

variable "vpc_subnetwork" {
  description = "Subnetwork for Direct VPC egress."
  type        = string
  default     = ""
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector id, the alternative to Direct VPC egress."
  type        = string
  default     = ""
}

variable "public_access" {
  description = "Let anyone invoke the REST API (allUsers run.invoker on challenge and instance), for CTFd instances that cannot send Google ID tokens. Protect it with api_tokens_secret."
  type        = bool
  default     = false
}

variable "invokers" {
  description = "IAM members allowed to call the REST API when it is private (e.g. serviceAccount:ctfd@PROJECT.iam.gserviceaccount.com)."
  type        = list(string)
  default     = []
}

variable "allowed_source_ranges" {
  description = "CIDR ranges allowed through the load balancer (a Cloud Armor policy denies the rest); e.g. the egress IP of your CTFd. Empty: no policy."
  type        = list(string)
  default     = []
}

variable "domain" {
  description = "Domain name of the API (a Google-managed certificate is issued for it, point its A record at the api_ip output). Empty: plain HTTP on the load balancer's IP."
  type        = string
  default     = ""
}

variable "request_timeout_seconds" {
  description = "Cloud Run request timeout of every function. A deployment may take deploy_timeout_seconds; keep a margin above it."
  type        = number
  default     = 600
  validation {
    condition     = var.request_timeout_seconds >= 600 && var.request_timeout_seconds <= 3600
    error_message = "request_timeout_seconds must be within 600..3600."
  }
}

variable "deploy_timeout_seconds" {
  description = "DEPLOY_TIMEOUT: deadline of one Pulumi operation, under request_timeout_seconds."
  type        = number
  default     = 540
}

variable "instance_min_instances" {
  description = "Minimum instances of the instance function (1 keeps pool claims in milliseconds)."
  type        = number
  default     = 0
}

variable "max_instances" {
  description = "Maximum instances of each function."
  type        = map(number)
  default = {
    challenge = 5
    instance  = 20
    janitor   = 1
  }
}

variable "janitor_schedule" {
  description = "Cron schedule of the janitor (Cloud Scheduler)."
  type        = string
  default     = "* * * * *"
}

variable "janitor_time_zone" {
  description = "Time zone of janitor_schedule."
  type        = string
  default     = "Etc/UTC"
}

variable "oci_allowed_registries" {
  description = "OCI_ALLOWED_REGISTRIES: comma-separated registry hosts scenarios may come from (empty: all)."
  type        = string
  default     = ""
}

variable "log_level" {
  description = "LOG_LEVEL of the functions."
  type        = string
  default     = "info"
}

variable "otel_exporter_otlp_endpoint" {
  description = "OTEL_EXPORTER_OTLP_ENDPOINT (an OpenTelemetry Collector reachable from Cloud Run); empty: no export."
  type        = string
  default     = ""
}

variable "deployer_roles" {
  description = "Project roles given to the instance and janitor functions, whose scenarios create and destroy players' resources with these rights."
  type        = list(string)
  default     = []
}

variable "previewer_roles" {
  description = "Project roles given to the challenge function, which previews scenarios at registration (read access is enough)."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect the Cloud Run services and the state bucket from terraform destroy."
  type        = bool
  default     = true
}
