#!/bin/sh
# Answers with the request body, to check that bodies pass through the gateway.
printf 'Content-Type: application/octet-stream\r\n\r\n'
head -c "${CONTENT_LENGTH:-0}"
