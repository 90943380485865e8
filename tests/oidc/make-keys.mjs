// Writes a private JWK set and the same key as PKCS#8 PEM:
//   node make-keys.mjs FILE KID [ALG]    (ALG: RS256 | ES256 | EdDSA)
// FILE gets [jwk]; FILE.pem gets the private key (tests sign with it).
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
const [file, kid, alg = 'RS256'] = process.argv.slice(2);
const pair =
  alg === 'RS256' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
  : alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : generateKeyPairSync('ed25519');
const jwk = { ...pair.privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
writeFileSync(file, JSON.stringify([jwk]));
writeFileSync(`${file}.pem`, pair.privateKey.export({ format: 'pem', type: 'pkcs8' }));
