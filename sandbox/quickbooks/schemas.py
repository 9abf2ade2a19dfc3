"""The writable shapes of Customer, Invoice and Payment, for QBO's unknown-property fault.

A field maps to ``None`` (a scalar), a dict (a nested object), ``[dict]`` (a list of
objects) or ``ANY`` (accepted without a closer look).
"""

from __future__ import annotations

from typing import Any

from sandbox.quickbooks.common import QBError, unsupported

ANY = "any"
REF = {"value": None, "name": None, "type": None}
ADDRESS = dict.fromkeys(
    (
        "Id",
        "Line1",
        "Line2",
        "Line3",
        "Line4",
        "Line5",
        "City",
        "Country",
        "CountryCode",
        "County",
        "CountrySubDivisionCode",
        "PostalCode",
        "PostalCodeSuffix",
        "Lat",
        "Long",
        "Tag",
        "Note",
    )
)
EMAIL = {"Address": None}
PHONE = {"FreeFormNumber": None}
COMMON = {
    "Id": None,
    "SyncToken": None,
    "sparse": None,
    "domain": None,
    "MetaData": ANY,
    "status": None,
    "CustomField": ANY,
}
CUSTOMER = {
    **COMMON,
    "DisplayName": None,
    "Title": None,
    "GivenName": None,
    "MiddleName": None,
    "FamilyName": None,
    "Suffix": None,
    "FullyQualifiedName": None,
    "CompanyName": None,
    "PrintOnCheckName": None,
    "Active": None,
    "PrimaryPhone": PHONE,
    "Mobile": PHONE,
    "Fax": PHONE,
    "AlternatePhone": PHONE,
    "PrimaryEmailAddr": EMAIL,
    "WebAddr": {"URI": None},
    "BillAddr": ADDRESS,
    "ShipAddr": ADDRESS,
    "Notes": None,
    "Taxable": None,
    "Balance": None,
    "BalanceWithJobs": None,
    "OpenBalanceDate": None,
    "CurrencyRef": REF,
    "PreferredDeliveryMethod": None,
    "Job": None,
    "BillWithParent": None,
    "ParentRef": REF,
    "Level": None,
    "ResaleNum": None,
    "PaymentMethodRef": REF,
    "SalesTermRef": REF,
    "DefaultTaxCodeRef": REF,
    "TaxExemptionReasonId": None,
    "CustomerTypeRef": REF,
    "IsProject": None,
    "GSTIN": None,
    "BusinessNumber": None,
    "PrimaryTaxIdentifier": None,
    "SecondaryTaxIdentifier": None,
    "ARAccountRef": REF,
    "V4IDPseudonym": None,
    "ClientEntityId": None,
    "GSTRegistrationType": None,
    "Source": None,
}
SALES_ITEM = {
    "ItemRef": REF,
    "ClassRef": REF,
    "Qty": None,
    "UnitPrice": None,
    "TaxCodeRef": REF,
    "ServiceDate": None,
    "DiscountRate": None,
    "DiscountAmt": None,
    "ItemAccountRef": REF,
    "TaxInclusiveAmt": None,
    "MarkupInfo": ANY,
    "PriceLevelRef": REF,
    "TaxClassificationRef": REF,
}
LINE = {
    "Id": None,
    "LineNum": None,
    "Description": None,
    "Amount": None,
    "DetailType": None,
    "SalesItemLineDetail": SALES_ITEM,
    "SubTotalLineDetail": ANY,
    "DiscountLineDetail": ANY,
    "DescriptionOnly": ANY,
    "DescriptionLineDetail": ANY,
    "GroupLineDetail": ANY,
    "LinkedTxn": ANY,
    "CustomField": ANY,
    "ProjectRef": REF,
    "LineEx": ANY,
}
INVOICE = {
    **COMMON,
    "DocNumber": None,
    "TxnDate": None,
    "DueDate": None,
    "ShipDate": None,
    "CustomerRef": REF,
    "Line": [LINE],
    "TotalAmt": None,
    "Balance": None,
    "HomeBalance": None,
    "HomeTotalAmt": None,
    "CurrencyRef": REF,
    "ExchangeRate": None,
    "BillEmail": EMAIL,
    "BillEmailCc": EMAIL,
    "BillEmailBcc": EMAIL,
    "BillAddr": ADDRESS,
    "ShipAddr": ADDRESS,
    "ShipFromAddr": ADDRESS,
    "PrivateNote": None,
    "CustomerMemo": {"value": None},
    "SalesTermRef": REF,
    "EmailStatus": None,
    "PrintStatus": None,
    "AllowIPNPayment": None,
    "AllowOnlinePayment": None,
    "AllowOnlineCreditCardPayment": None,
    "AllowOnlineACHPayment": None,
    "TxnTaxDetail": ANY,
    "ApplyTaxAfterDiscount": None,
    "LinkedTxn": ANY,
    "Deposit": None,
    "DepositToAccountRef": REF,
    "DepartmentRef": REF,
    "ClassRef": REF,
    "TrackingNum": None,
    "ShipMethodRef": REF,
    "GlobalTaxCalculation": None,
    "TransactionLocationType": None,
    "TxnSource": None,
    "InvoiceLink": None,
    "DeliveryInfo": ANY,
    "ProjectRef": REF,
    "RecurDataRef": REF,
    "TaxExemptionRef": REF,
    "FreeFormAddress": None,
}
PAYMENT_LINE = {
    "Amount": None,
    "LinkedTxn": [{"TxnId": None, "TxnType": None, "TxnLineId": None}],
    "LineEx": ANY,
}
PAYMENT = {
    **COMMON,
    "TxnDate": None,
    "CustomerRef": REF,
    "TotalAmt": None,
    "UnappliedAmt": None,
    "ProcessPayment": None,
    "PaymentRefNum": None,
    "PaymentMethodRef": REF,
    "DepositToAccountRef": REF,
    "ARAccountRef": REF,
    "CurrencyRef": REF,
    "ExchangeRate": None,
    "PrivateNote": None,
    "Line": [PAYMENT_LINE],
    "CreditCardPayment": ANY,
    "TxnSource": None,
    "TransactionLocationType": None,
    "ProjectRef": REF,
    "TaxExemptionRef": REF,
}
SCHEMAS: dict[str, dict[str, Any]] = {"Customer": CUSTOMER, "Invoice": INVOICE, "Payment": PAYMENT}


def check(value: Any, schema: Any, entity: str) -> None:
    """Raise QBO's 2010 fault for the first property the entity does not have."""
    if schema is ANY or schema is None or value is None:
        return
    if isinstance(schema, list):
        if not isinstance(value, list):
            raise QBError(
                "2010",
                "Request has invalid or unsupported property",
                f"Expected an array for {entity} property",
                element=entity,
            )
        for item in value:
            check(item, schema[0], entity)
        return
    if not isinstance(value, dict):
        raise QBError(
            "2010",
            "Request has invalid or unsupported property",
            f"Expected an object for {entity} property",
            element=entity,
        )
    for key, item in value.items():
        if key not in schema:
            raise unsupported(key, entity)
        check(item, schema[key], entity)
