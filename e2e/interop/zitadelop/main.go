// Command zitadelop runs zitadel/oidc's own example OpenID Provider
// (github.com/zitadel/oidc/v3/example/server) on any issuer, as a third-party
// upstream for usher's interop tests. The stock example's main hard-codes
// http://localhost:9998/; this one takes the issuer and the relying party
// (usher) to register from flags, and prints "ready" once it listens.
//
// Users (from the example storage): test-user@<issuer host> and test-user2,
// both with the password "verysecure".
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
)

func main() {
	issuer := flag.String("issuer", "", "issuer URL, e.g. http://127.0.0.1:9998/ (the listener takes its host:port)")
	clientID := flag.String("client-id", "usher", "the relying party's client_id")
	secret := flag.String("client-secret", "", "the relying party's secret (client_secret_basic)")
	redirect := flag.String("redirect-uri", "", "the relying party's redirect URI")
	flag.Parse()
	if *issuer == "" || *secret == "" || *redirect == "" {
		flag.Usage()
		os.Exit(2)
	}
	u, err := url.Parse(*issuer)
	if err != nil || u.Host == "" {
		log.Fatalf("issuer %q: not an absolute URL", *issuer)
	}
	// The example storage keeps clients in a package-level map that
	// RegisterClients fills before the storage is used. A web client
	// authenticates with client_secret_basic and may use refresh tokens.
	storage.RegisterClients(storage.WebClient(*clientID, *secret, *redirect))
	router := exampleop.SetupServer(*issuer, storage.NewStorage(storage.NewUserStore(*issuer)), nil, false)

	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.Serve(ln))
}
