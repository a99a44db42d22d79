"""The admin web app under /admin: server-rendered pages (Jinja2), per-user sign-in, CSRF on every form."""

from webhooks.admin.routes import router

__all__ = ["router"]
