#!/usr/bin/env python3
"""Runs the django-scim2 test peer's Django commands (migrate, runserver); see
scripts/start-django-scim.sh, which sets GATEHOUSE_DJANGO_SCIM_DIR and GATEHOUSE_DJANGO_SCIM_TOKEN."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "peer.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
