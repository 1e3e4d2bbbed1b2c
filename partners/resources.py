"""Export of partners with their contacts (django-import-export), in the same columns the import reads,
so an exported file can be edited in a spreadsheet and imported again."""

from import_export import fields, resources

from partners.imports import FORMULA_PREFIXES
from partners.models import Contact


def neutralise_formula(value):
    """Prefix a would-be formula with an apostrophe: spreadsheets then show it as text. The import strips
    that apostrophe again, so exported phone numbers like +49 30 … round-trip."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class PartnerContactResource(resources.ModelResource):
    tg_company_id = fields.Field(attribute="partner__tg_company_id", column_name="tg_company_id")
    partner_name = fields.Field(attribute="partner__name", column_name="partner_name")
    partner_type = fields.Field(attribute="partner__partner_type", column_name="partner_type")
    region = fields.Field(attribute="partner__region", column_name="region")
    country_code = fields.Field(column_name="country_code")
    tier = fields.Field(attribute="partner__tier", column_name="tier")
    product_lines = fields.Field(column_name="product_lines")
    onboarding_status = fields.Field(attribute="partner__onboarding_status", column_name="onboarding_status")
    contact_email = fields.Field(attribute="email", column_name="contact_email")
    marketing_status = fields.Field(attribute="marketing_status", column_name="marketing_status")
    partner_manager = fields.Field(column_name="partner_manager")

    class Meta:
        model = Contact
        fields = (
            "tg_company_id",
            "partner_name",
            "partner_type",
            "region",
            "country_code",
            "tier",
            "product_lines",
            "onboarding_status",
            "contact_email",
            "first_name",
            "last_name",
            "role",
            "phone",
            "language",
            "marketing_status",
            "partner_manager",
        )
        export_order = fields

    def dehydrate_country_code(self, contact):
        return contact.partner.country_code.code or ""

    def dehydrate_product_lines(self, contact):
        return "|".join(line.name for line in contact.partner.product_lines.all())

    def dehydrate_partner_manager(self, contact):
        manager = contact.partner.partner_manager
        return manager.email if manager else ""

    def export_field(self, field, instance, **kwargs):
        return neutralise_formula(super().export_field(field, instance, **kwargs))
