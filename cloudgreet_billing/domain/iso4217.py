"""ISO 4217 currency codes: the one table every currency typed or imported is checked
against (``uds`` is refused, not stored as a currency nobody can bill in).

Source: ISO 4217 List One (current codes), as shipped in Debian's ``iso-codes`` 4.15.0
(``/usr/share/iso-codes/json/iso_4217.json``), plus the codes ISO added since: ``zwg``
(Zimbabwe Gold, 2024) and ``xcg`` (Caribbean guilder, 2025). Codes that name no money a
customer is billed in are left out: precious metals (``xag``, ``xau``, ``xpd``, ``xpt``),
bond-market units (``xba``, ``xbb``, ``xbc``, ``xbd``), ``xts`` (testing) and ``xxx`` (no
currency). Withdrawn codes still in the list (``hrk``) stay, for entries recorded before.
Stored lowercase, as Stripe writes currencies.
"""

from __future__ import annotations

from typing import Final

ISO_4217: Final = frozenset(
    """
aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob bov brl bsd
btn bwp byn bzd cad cdf che chf chw clf clp cny cop cou crc cuc cup cve czk djf dkk dop
dzd egp ern etb eur fjd fkp gbp gel ghs gip gmd gnf gtq gyd hkd hnl hrk htg huf idr ils
inr iqd irr isk jmd jod jpy kes kgs khr kmf kpw krw kwd kyd kzt lak lbp lkr lrd lsl lyd
mad mdl mga mkd mmk mnt mop mru mur mvr mwk mxn mxv myr mzn nad ngn nio nok npr nzd omr
pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd scr sdg sek sgd shp sle sll sos
srd ssp stn svc syp szl thb tjs tmt tnd top try ttd twd tzs uah ugx usd usn uyi uyu uyw
uzs ved ves vnd vuv wst xaf xcd xcg xdr xof xpf xsu xua yer zar zmw zwg zwl
""".split()  # noqa: SIM905 - one table, easy to read against its source
)
