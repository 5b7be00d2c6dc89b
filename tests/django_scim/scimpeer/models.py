"""The peer's directory: a User and a Group with members, each carrying django-scim2's
scim_id / scim_external_id (and scim_username / scim_display_name) through its mixins."""
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import models
from django.utils import timezone
from django_scim.models import AbstractSCIMGroupMixin, AbstractSCIMUserMixin


class User(AbstractSCIMUserMixin, AbstractBaseUser):
    # The fields django-scim2's stock SCIMUser adapter reads and writes.
    username = models.CharField(max_length=150, unique=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    email = models.EmailField(blank=True)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    # SCIM displayName as sent (the stock adapter only derives one from the names).
    display_name = models.CharField(max_length=254, blank=True)
    is_superuser = models.BooleanField(default=False)

    USERNAME_FIELD = "username"

    @property
    def scim_groups(self):
        # What the stock SCIMUser adapter lists as the user's groups.
        return self.peer_groups


class Group(AbstractSCIMGroupMixin):
    # Unique, as django.contrib.auth's Group name is: the stock SCIMGroup adapter is written for it.
    name = models.CharField(max_length=150, unique=True)
    members = models.ManyToManyField(User, related_name="peer_groups", blank=True)

    @property
    def user_set(self):
        # The stock SCIMGroup adapter reads and PATCHes members through `user_set`
        # (django.contrib.auth's reverse name); here it is the members relation.
        return self.members
