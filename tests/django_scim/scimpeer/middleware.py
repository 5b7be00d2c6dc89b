"""Bearer-token authentication for /scim/: django-scim2 only checks that request.user is
authenticated (SCIMAuthCheckMiddleware), so this middleware refuses a request without
`Authorization: Bearer <GATEHOUSE_DJANGO_SCIM_TOKEN>` with 401 and otherwise lets it in as a
superuser that lives only in memory (so it never shows up in /Users, and ids start at "1")."""
import hmac
import json

from django.conf import settings
from django.http import HttpResponse
from django_scim import constants
from django_scim.exceptions import AuthorizationError


class BearerTokenMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/scim/"):
            if not self.token_ok(request.META.get("HTTP_AUTHORIZATION", "")):
                error = AuthorizationError("Authorization: Bearer <token> required")
                response = HttpResponse(
                    json.dumps(error.to_dict()),
                    content_type=constants.SCIM_CONTENT_TYPE,
                    status=401,
                )
                response["WWW-Authenticate"] = settings.SCIM_SERVICE_PROVIDER["WWW_AUTHENTICATE_HEADER"]
                return response
            from .models import User

            request.user = User(username="gatehouse-scim-client", is_superuser=True)
        return self.get_response(request)

    @staticmethod
    def token_ok(header):
        expected = settings.SCIM_BEARER_TOKEN
        scheme, _, token = header.partition(" ")
        return bool(expected) and scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), expected.encode()
        )
