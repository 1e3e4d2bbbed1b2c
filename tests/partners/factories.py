import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from partners.models import CommunityIssue, Contact, TradingAddress, TradingPartner
from partners.selectors import ADMINISTRATORS_GROUP, PARTNER_MANAGERS_GROUP


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@partnerlink.example")
    first_name = "Pat"
    last_name = factory.Sequence(lambda n: f"Manager{n}")
    is_staff = True
    password = factory.PostGenerationMethodCall("set_password", "pw")

    @factory.post_generation
    def groups_(self, create, extracted, **kwargs):
        self.save()


class PartnerManagerFactory(UserFactory):
    @factory.post_generation
    def in_group(self, create, extracted, **kwargs):
        self.groups.add(Group.objects.get(name=PARTNER_MANAGERS_GROUP))


class AdministratorFactory(UserFactory):
    @factory.post_generation
    def in_group(self, create, extracted, **kwargs):
        self.groups.add(Group.objects.get(name=ADMINISTRATORS_GROUP))


class TradingPartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TradingPartner

    tg_company_id = factory.Sequence(lambda n: f"GC{n:08d}AA")
    name = factory.Sequence(lambda n: f"Partner {n}")
    partner_type = "supplier"
    region = "emea"
    country_code = "DE"
    tier = "standard"
    onboarding_status = "approved"


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    partner = factory.SubFactory(TradingPartnerFactory)
    email = factory.Sequence(lambda n: f"contact{n}@partner.example")
    first_name = "Chris"
    last_name = factory.Sequence(lambda n: f"Contact{n}")
    role = "primary"


class TradingAddressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TradingAddress

    partner = factory.SubFactory(TradingPartnerFactory)
    address = factory.Sequence(lambda n: f"ZZ:PARTNER{n}")


class CommunityIssueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CommunityIssue

    tg_issue_id = factory.Sequence(lambda n: f"ISS-{n}")
    partner = factory.SubFactory(TradingPartnerFactory)
    category = "shipment_exception"
    title = factory.Sequence(lambda n: f"Shipment {n} delayed")
    raised_at = factory.LazyFunction(timezone.now)
