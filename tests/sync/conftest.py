from tests.webhooks.conftest import phone, stack, tenants_path, textback  # noqa: F401  (shared e2e fixtures)
