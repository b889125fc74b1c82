//go:build tools

package main

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/emersion/go-smtp"
	_ "github.com/go-jose/go-jose/v4"
	_ "github.com/gorilla/securecookie"
	_ "github.com/gorilla/sessions"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/wneessen/go-mail"
	_ "github.com/zitadel/oidc/v3/pkg/op"
	_ "github.com/zitadel/oidc/v3/pkg/client/rp"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/oauth2"
	_ "gopkg.in/yaml.v3"
	_ "github.com/prometheus/client_golang/prometheus"
)
