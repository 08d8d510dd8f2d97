"""The Power Automate connector's API surface: the definition the app serves and makers import
(`definition`), and what the connector's actions need beyond the general job contract."""
