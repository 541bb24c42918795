"""Alert lifecycle, notification events and the email / Slack / webhook bridges."""
