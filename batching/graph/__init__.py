"""Talking to Microsoft Graph: credentials and token policy (`auth`), the `$batch` client (`client`)."""
