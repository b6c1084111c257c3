"""DNS (dnspython on Trio): verification of a sending domain's SPF, MX and DKIM records."""
