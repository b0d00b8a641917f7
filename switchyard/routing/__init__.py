"""From a public model name to the deployments that can serve a request."""
