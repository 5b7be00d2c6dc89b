"""django-scim2's stock adapters, with one addition: a user's displayName is stored as sent
(and PATCH replace accepts it) instead of being only derived from givenName/familyName."""
from django_scim import adapters


def base_location(request=None, *args, **kwargs):
    """Where meta.location and the Location header point: the scheme and host the request used."""
    if request is None:
        return "http://127.0.0.1"
    return f"{request.scheme}://{request.get_host()}"


class SCIMUser(adapters.SCIMUser):
    ATTR_MAP = {**adapters.SCIMUser.ATTR_MAP, ("displayName", None, None): "display_name"}

    @property
    def display_name(self):
        return self.obj.display_name or super().display_name

    @property
    def name_formatted(self):
        # name.formatted stays the stock "givenName familyName" (or userName).
        return adapters.SCIMUser.display_name.fget(self)

    def from_dict(self, d):
        super().from_dict(d)
        self.obj.display_name = d.get("displayName") or ""


class SCIMGroup(adapters.SCIMGroup):
    pass
