"""The masker: phone numbers and e-mail addresses in any of their usual forms are hidden, and
look-alikes that are not personal data (times, amounts, short ids, key numbers) are not."""

from __future__ import annotations

import datetime as dt
import string
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopkit._mask import mask, mask_key, mask_record, mask_text

MASKED = [
    # mobiles, every usual way of writing them
    ("13812345678", "138****5678"),
    ("138 1234 5678", "138 **** 5678"),
    ("138-1234-5678", "138-****-5678"),
    ("+86 138 1234 5678", "+86 138 **** 5678"),
    ("+86-138-1234-5678", "+86-138-****-5678"),
    ("+8613812345678", "+86138****5678"),
    ("008613812345678", "0086138****5678"),
    ("0086 138 1234 5678", "0086 138 **** 5678"),
    ("86-13812345678", "86-138****5678"),
    ("(+86) 138 1234 5678", "(+86) 138 **** 5678"),
    ("请致电138 1234 5678。", "请致电138 **** 5678。"),
    ("tel:13912345678,", "tel:139****5678,"),
    # landlines
    ("010-8888 6666", "010-**** 6666"),
    ("010-88886666", "010-****6666"),
    ("(0755) 1234 5678", "(0755) **** 5678"),
    ("0755-1234567", "0755-****4567"),
    ("01088886666", "010****6666"),
    ("+86 10 8888 6666", "+86 10 **** 6666"),
    ("+86 755 1234 5678", "+86 755 **** 5678"),
    # e-mail addresses: any script in the local part, a domain with or without a dot
    ("li.lei@example.com", "l***@example.com"),
    ("王小明@example.com", "王***@example.com"),
    ("李四@例子.中国", "李***@例子.中国"),
    ("josé.garcía@correo.es", "j***@correo.es"),
    ("xiaohong@localhost", "x***@localhost"),
    ("mail: a+tag@mail.qq.com.", "mail: a***@mail.qq.com."),
    ("email=li@163.com", "email=l***@163.com"),
    ("联系（王小明@example.com）", "联系（王***@example.com）"),
    ("“li@x.cn”", "“l***@x.cn”"),
    ("13812345678@139.com", "1***@139.com"),
]


@pytest.mark.parametrize(("text", "expected"), MASKED)
def test_phones_and_emails_in_every_usual_form_are_masked(text: str, expected: str) -> None:
    """Each form of a phone number or e-mail address is masked, its frame kept."""
    assert mask_text(text) == expected


NOT_PII = [
    "2024-05-01T10:00:00+08:00",
    "1997-01-01T10:02:00",
    "2024-05-01 12:30",
    "amount 1399.00",
    "12345678.90",
    "order 1234567890",  # 10 digits: an id, not a phone number
    "0123456789",
    "12345678901",  # 11 digits but not 1[3-9]
    "23812345678",
    "138123456789",  # 12 digits starting like a mobile
    "1714550400000",  # milliseconds since 1970
    "retail:1:birthday_coupon:cdnow-01095:1:0",
    "pk:campaign:spring:1714550400:c7:0",
    "@daily at 09:00",
    "5@10%",
    "price 138 元, 1234 件",
    "l***@example.com",  # already masked
    "138****5678",
    "",
]


@pytest.mark.parametrize("text", NOT_PII)
def test_look_alikes_that_are_not_personal_data_stay(text: str) -> None:
    """Times, amounts, short ids, keys' numbers and masked text are left as they are."""
    assert mask_text(text) == text


def test_mask_walks_json_values_and_masks_phone_numbers_stored_as_integers() -> None:
    """Strings in dicts and lists, dict keys, and integer phone numbers are masked."""
    record = {"customer_id": 13812345678, "amount": 1399, "when": "2024-05-01T10:00:00",
              "contacts": ["li@example.com", 8613812345678], "13912345678": True}
    assert mask(record) == {"customer_id": "138****5678", "amount": 1399,
                            "when": "2024-05-01T10:00:00",
                            "contacts": ["l***@example.com", "86138****5678"],
                            "139****5678": True}


def test_mask_key_hides_only_the_customer_part() -> None:
    """The key's playbook, rule and numbers stay; the customer id in it is masked."""
    assert mask_key("shop:2:welcome:13812345678:3:0", "13812345678") == \
        "shop:2:welcome:138****5678:3:0"
    assert mask_key("shop:2:welcome:王小明@example.com:3:0", "王小明@example.com") == \
        "shop:2:welcome:王***@example.com:3:0"
    assert mask_key("shop:2:welcome:c1:13812345678:0", "c1") == \
        "shop:2:welcome:c1:13812345678:0"  # not a customer part: left alone
    assert mask_key("shop:campaign:spring:1714550400:138 1234 5678:0", "138 1234 5678") == \
        "shop:campaign:spring:1714550400:138 **** 5678:0"


def test_mask_record_leaves_names_and_times_and_masks_the_rest() -> None:
    """An action record keeps time, rule, action, status and trigger; masks id, key, text."""
    record = {"time": "2024-05-01T10:00:00+08:00", "customer_id": "13812345678",
              "rule": "r", "action": "send", "status": "planned", "trigger": "event:visit",
              "key": "p:1:r:13812345678:1:0", "message": "hi 13812345678"}
    assert mask_record(record) == {**record, "customer_id": "138****5678",
                                   "key": "p:1:r:138****5678:1:0",
                                   "message": "hi 138****5678"}


_SEP = st.sampled_from(["", " ", "-"])
_PREFIX = st.sampled_from(["", "+86", "+86 ", "+86-", "0086", "0086 ", "86", "(+86) "])
_FRAME = st.text(alphabet=string.ascii_letters + "，。：你好请致电 ()", max_size=12)


@given(_PREFIX, st.sampled_from("3456789"), st.text(alphabet=string.digits, min_size=9,
                                                    max_size=9), _SEP, _SEP, _FRAME, _FRAME)
def test_any_mobile_number_is_masked_in_any_frame(prefix: str, second: str, rest: str,
                                                  sep1: str, sep2: str, left: str,
                                                  right: str) -> None:
    """A mobile number, however written and wherever in a text, keeps 3+4 digits only."""
    head, middle, tail = "1" + second + rest[0], rest[1:5], rest[5:]
    number = f"{prefix}{head}{sep1}{middle}{sep2}{tail}"
    shown = mask_text(f"{left}{number}{right}")
    assert shown == f"{left}{prefix}{head}{sep1}****{sep2}{tail}{right}"
    assert mask_text(shown) == shown


_LOCAL = st.text(alphabet=st.characters(categories=["L", "N"]) | st.sampled_from("._-+"),
                 min_size=2, max_size=16)
_LABEL = st.text(alphabet=string.ascii_lowercase + string.digits + "例子中国", min_size=1,
                 max_size=8)


@given(_LOCAL, st.lists(_LABEL, min_size=1, max_size=3), st.sampled_from(["com", "cn", "中国"]),
       st.sampled_from(["", " ", "：", "（", "mail "]))
def test_any_email_address_loses_its_local_part(local: str, labels: list[str], tld: str,
                                                before: str) -> None:
    """An e-mail address in any script keeps its first character and domain only."""
    domain = ".".join([*labels, tld])
    shown = mask_text(f"{before}{local}@{domain}")
    assert shown == f"{before}{local[0]}***@{domain}"
    assert mask_text(shown) == shown


@given(st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1)),
       st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
       st.integers(min_value=0, max_value=9_999_999_999), st.integers(0, 99))
def test_times_amounts_and_short_numbers_are_never_masked(when: dt.datetime, amount: Decimal,
                                                          number: int, index: int) -> None:
    """ISO times, amounts, numbers up to 10 digits and keys built of them stay as they are."""
    text = (f"{when.isoformat()} {when:%Y-%m-%d %H:%M} amount={amount} #{number} "
            f"p:1:r:c{number}:{index}:0")
    assert mask_text(text) == text
    assert mask_key(f"p:1:r:c{number}:{index}:0", f"c{number}") == f"p:1:r:c{number}:{index}:0"
