"""azd hooks: scripts azd runs around provisioning (see azure.yaml)."""
